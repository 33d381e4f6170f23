"""Ray Tune's overhead: N short trials as a sweep against the same trials back to back in one
process. Ratio = sweep wall time x concurrency / back-to-back wall time (1.0 = no overhead).

    python benchmarks/ray_overhead.py            # 16 trials, 2 at a time
    python benchmarks/ray_overhead.py --smoke-test
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from adalase_tune.config import from_dict
from adalase_tune.engine import Trainer
from adalase_tune.tuning import SweepOptions, connect, sweep, trial_rows

from _common import write_result


def config(epochs: int):
    return from_dict({"data": {"name": "digits", "n_train": 300}, "model": {"name": "cnn", "width": 8},
                      "selection": {"method": "uniform"},
                      "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "device": "cpu"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.epochs = 2, 1
    cfg = config(args.epochs)
    torch.set_num_threads(1)
    start = time.perf_counter()
    inproc = [Trainer(cfg.replace(**{"train.seed": s})).run()["cost"] for s in range(args.trials)]
    back_to_back = time.perf_counter() - start
    connect(num_cpus=args.concurrency)
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        grids = sweep(cfg, "uniform", SweepOptions(seeds=list(range(args.trials)), storage=storage,
                                                  max_concurrent=args.concurrency, verbose=0))
        swept = time.perf_counter() - start
    rows = trial_rows(grids[0], "uniform")
    assert len(rows) == args.trials and all(r["status"] == "TERMINATED" for r in rows)
    in_trial = sum(r["device_s"] for r in rows)
    in_proc = sum(c["train_s"] + c["eval_s"] for c in inproc)
    ratio = swept * args.concurrency / back_to_back
    body = (f"{args.trials} trials of {args.epochs} epochs (cnn width 8, digits n_train=300, 1 thread per trial), "
            f"{args.concurrency} at a time under Ray Tune, against the same trials back to back in one process.\n\n"
            "| measure | value |\n|---|---|\n"
            f"| back to back in one process, wall | {back_to_back:.1f} s |\n"
            f"| Ray Tune sweep, wall | {swept:.1f} s |\n"
            f"| **overhead ratio** (sweep wall × concurrency / back-to-back wall) | **{ratio:.2f}** |\n"
            f"| training+eval seconds measured inside the trials, Ray / in-process | {in_trial / in_proc:.2f} |\n\n"
            "A ratio of 1.0 would mean Ray adds nothing; the excess is each trial's fixed cost (scheduling, starting "
            "the warm workers once, building data and model), checkpoint uploads each epoch, and two trials "
            "sharing 2 cores.\n")
    path = write_result("ray_overhead", "Ray Tune overhead", body, args.smoke_test)
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
