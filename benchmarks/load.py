"""Load: a sweep of many one-epoch trials of the tiny model, two at a time, logged to MLflow.
Records the wall time, failures, MLflow child runs and Ray's overhead against the trials' own time.

    python benchmarks/load.py               # 200 trials
    python benchmarks/load.py --smoke-test  # 4 trials
"""
from __future__ import annotations

import argparse
import tempfile
import time

from mlflow.tracking import MlflowClient

from adalase_tune.config import from_dict
from adalase_tune.tracking import Tracking, config_hash
from adalase_tune.tuning import SweepOptions, connect, sweep, trial_rows

from _common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    n = 4 if args.smoke_test else args.trials
    cfg = from_dict({"data": {"name": "digits", "n_train": 50}, "model": {"name": "cnn", "width": 4},
                     "train": {"epochs": 1, "batch_size": 32, "device": "cpu"}})
    connect(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        tracking = Tracking(f"sqlite:///{tmp}/load.db", "load")
        parent = tracking.parent_run("random", "load", config_hash(cfg))
        start = time.perf_counter()
        grids = sweep(cfg, "random", SweepOptions(seeds=[0], num_samples=n, storage=f"{tmp}/ray", max_concurrent=2,
                                                   verbose=0), tracker_factory=tracking.trial_factory(parent))
        wall = time.perf_counter() - start
        rows = trial_rows(grids[0], "random")
        client = MlflowClient(tracking_uri=tracking.uri)
        children = client.search_runs([tracking.experiment_id], "tags.run_kind = 'trial'", max_results=10000)
    errors = sum(r["status"] != "TERMINATED" for r in rows)
    inside = sum(r["device_s"] for r in rows)
    body = (f"{n} one-epoch trials (cnn width 4, digits n_train=50), 2 at a time, random search, MLflow in SQLite.\n\n"
            "| measure | value |\n|---|---|\n"
            f"| trials finished / failed | {n - errors} / {errors} |\n| MLflow child runs | {len(children)} |\n"
            f"| wall time | {wall:.0f} s ({wall / n:.2f} s per trial) |\n"
            f"| training+eval time inside the trials | {inside:.0f} s |\n"
            f"| Ray overhead ratio (wall × 2 / time inside trials) | {wall * 2 / inside:.1f} |\n\n"
            "One-epoch trials on 50 samples take well under a second of training, so the fixed cost of each trial "
            "(scheduling, building data and model in a warm worker, registering and closing its MLflow run, "
            "checkpoint upload) dominates.\n")
    assert errors == 0 and len(children) == n
    print(body)
    print(f"wrote {write_result('load', 'Load: many short trials with MLflow', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
