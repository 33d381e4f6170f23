"""MLflow logging's overhead: the same sweep with and without MLflow (a SQLite store), as a ratio.

    python benchmarks/mlflow_overhead.py
    python benchmarks/mlflow_overhead.py --smoke-test
"""
from __future__ import annotations

import argparse
import tempfile
import time

from adalase_tune.config import from_dict
from adalase_tune.tracking import Tracking, config_hash
from adalase_tune.tuning import SweepOptions, connect, sweep, trial_rows

from _common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.epochs = 2, 1
    cfg = from_dict({"data": {"name": "digits", "n_train": 300}, "model": {"name": "cnn", "width": 8},
                     "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "device": "cpu"}})
    connect(num_cpus=2)
    walls = {"without MLflow": [], "with MLflow": []}
    with tempfile.TemporaryDirectory() as tmp:
        tracking = Tracking(f"sqlite:///{tmp}/overhead.db", "overhead")
        factory = tracking.trial_factory(tracking.parent_run("uniform", "overhead", config_hash(cfg)))
        # a warm-up sweep starts Ray's worker processes; then the two settings alternate
        order = ["warm-up"] + ["without MLflow", "with MLflow"] * (1 if args.smoke_test else 2)
        for i, label in enumerate(order):
            opts = SweepOptions(seeds=list(range(args.trials)), storage=f"{tmp}/ray", name=f"run{i}",
                                max_concurrent=2, verbose=0)
            start = time.perf_counter()
            rows = trial_rows(sweep(cfg, "uniform", opts, tracker_factory=factory if label == "with MLflow" else None)[0],
                              "uniform")
            if label != "warm-up":
                walls[label].append(time.perf_counter() - start)
            assert all(r["status"] == "TERMINATED" for r in rows)
    mean = {k: sum(v) / len(v) for k, v in walls.items()}
    body = (f"{args.trials} trials of {args.epochs} epochs (cnn width 8, digits n_train=300), 2 at a time, warm trial "
            "actors, MLflow in a local SQLite store, one metric batch per epoch per trial; after a warm-up sweep the two "
            "settings alternate.\n\n| run | wall (each sweep) | mean |\n|---|---|---|\n"
            + "".join(f"| {k} | {', '.join(f'{w:.1f} s' for w in v)} | {mean[k]:.1f} s |\n" for k, v in walls.items())
            + f"\n**MLflow overhead ratio** (with / without): **{mean['with MLflow'] / mean['without MLflow']:.2f}**\n")
    print(body)
    print(f"wrote {write_result('mlflow_overhead', 'MLflow logging overhead', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
