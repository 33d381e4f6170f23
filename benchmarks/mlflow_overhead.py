"""MLflow logging's overhead: the same sweep with and without MLflow (a SQLite store on the
driver; trials never open it), as a ratio measured side by side.

    python benchmarks/mlflow_overhead.py
    python benchmarks/mlflow_overhead.py --smoke-test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from adalase_tune.config import from_dict
from adalase_tune.experiment import sweep
from adalase_tune.tuning import SweepOptions, connect

from _common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.epochs, args.repeats = 2, 1, 1
    cfg = from_dict(
        {
            "data": {"name": "digits", "n_train": 300},
            "model": {"name": "cnn", "width": 8},
            "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "device": "cpu"},
        }
    )
    connect(num_cpus=2)
    walls = {"without MLflow": [], "with MLflow": []}
    with tempfile.TemporaryDirectory() as tmp:
        # a warm-up sweep starts Ray's worker processes; then the two settings alternate
        order = ["warm-up"] + ["without MLflow", "with MLflow"] * args.repeats
        for i, label in enumerate(order):
            opts = SweepOptions(seeds=list(range(args.trials)), storage=f"{tmp}/ray", name=f"run{i}", max_concurrent=2)
            uri = f"sqlite:///{tmp}/overhead.db" if label == "with MLflow" else None
            start = time.perf_counter()
            rows = sweep(cfg, "uniform", opts, tracking_uri=uri, experiment="overhead").rows
            if label != "warm-up":
                walls[label].append(time.perf_counter() - start)
            assert (rows["status"] == "TERMINATED").all()
    mean = {k: sum(v) / len(v) for k, v in walls.items()}
    median = {k: statistics.median(v) for k, v in walls.items()}
    body = (
        f"{args.trials} trials of {args.epochs} epochs (cnn width 8, digits n_train=300), 2 at a time, warm trial "
        "actors. With MLflow, the driver logs every trial from Tune's callbacks into a local SQLite store: a parent "
        "run, one run per trial with its params, per-epoch metrics buffered and written in batches, final metrics. "
        "After a warm-up sweep the two settings alternate.\n\n"
        "| run | wall (each sweep) | mean | median |\n|---|---|---|---|\n"
        + "".join(
            f"| {k} | {', '.join(f'{w:.1f} s' for w in v)} | {mean[k]:.1f} s | {median[k]:.1f} s |\n"
            for k, v in walls.items()
        )
        + f"\n**MLflow overhead ratio** (with / without): **{mean['with MLflow'] / mean['without MLflow']:.2f}** "
        f"on the means, **{median['with MLflow'] / median['without MLflow']:.2f}** on the medians (the median "
        "is robust to a sweep slowed by something else on the machine)\n"
    )
    print(body)
    print(f"wrote {write_result('mlflow_overhead', 'MLflow logging overhead', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
