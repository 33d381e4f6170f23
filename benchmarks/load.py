"""Load: a sweep of many one-epoch trials of the tiny model, two at a time, logged to MLflow by
the driver. Records the wall time, failures, MLflow child runs and Ray's overhead against the
trials' own time.

    python benchmarks/load.py               # 200 trials
    python benchmarks/load.py --smoke-test  # 4 trials
"""

from __future__ import annotations

import argparse
import tempfile
import time

from mlflow.tracking import MlflowClient

from adalase_tune.config import from_dict
from adalase_tune.experiment import sweep
from adalase_tune.tuning import SweepOptions, connect

from _common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    n = 4 if args.smoke_test else args.trials
    cfg = from_dict(
        {
            "data": {"name": "digits", "n_train": 50},
            "model": {"name": "cnn", "width": 4},
            "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
        }
    )
    connect(num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/load.db"
        start = time.perf_counter()
        rows = sweep(
            cfg,
            "random",
            SweepOptions(seeds=[0], num_samples=n, storage=f"{tmp}/ray", max_concurrent=2, name="load"),
            tracking_uri=uri,
            experiment="load",
        ).rows
        wall = time.perf_counter() - start
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("load").experiment_id
        children = client.search_runs([exp], "tags.run_kind = 'trial'", max_results=10000)
        finished = sum(r.info.status == "FINISHED" for r in children)
    errors = int((rows["status"] != "TERMINATED").sum())
    inside = rows["device_s"].sum()
    body = (
        f"{n} one-epoch trials (cnn width 4, digits n_train=50), 2 at a time, random search, MLflow in SQLite "
        "(logged by the driver).\n\n| measure | value |\n|---|---|\n"
        f"| trials finished / failed | {n - errors} / {errors} |\n"
        f"| MLflow child runs (FINISHED) | {len(children)} ({finished}) |\n"
        f"| wall time | {wall:.0f} s ({wall / n:.2f} s per trial) |\n"
        f"| training+eval time inside the trials | {inside:.0f} s |\n"
        f"| Ray overhead ratio (wall × 2 / time inside trials) | {wall * 2 / inside:.1f} |\n\n"
        "One-epoch trials on 50 samples take a few hundredths of a second of training, so the fixed cost of each "
        "trial (scheduling it on a warm worker, registering and closing its MLflow run on the driver) dominates.\n"
    )
    assert errors == 0 and len(children) == n and finished == n
    print(body)
    print(f"wrote {write_result('load', 'Load: many short trials with MLflow', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
