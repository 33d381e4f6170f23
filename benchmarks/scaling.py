"""Data-parallel scaling of one AdaLASE trial on Ray Train: 1 worker against 2 workers (gloo, one
thread each), the same global batch, measured side by side in one run.

Time per epoch is each worker's training wall time (``cost/train_s`` is summed over workers, so
it is divided by their number); speed-up = 1-worker time / 2-worker time, efficiency = speed-up / 2.
Ray Train's start (a few seconds per run) is excluded and reported apart.

    python benchmarks/scaling.py                 # CPU: cnn and mlp on digits
    python benchmarks/scaling.py --smoke-test
    python benchmarks/scaling.py --gpu --workers 2 --model resnet18   # on a machine with 2+ GPUs
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from adalase_tune import tuning
from adalase_tune.config import from_dict
from adalase_tune.data import build_data
from adalase_tune.engine import Trainer
from adalase_tune.trainable import run_data_parallel

from _common import write_result


def _tree(model: str, width: int, epochs: int, batch: int, device: str) -> dict:
    return {
        "data": {"name": "digits"},
        "model": {"name": model, "width": width},
        "augment": {"op": "translate"},
        "selection": {"method": "adalase"},
        "adalase": {"retrain": False, "val_source": "train"},  # the one-run form
        "train": {"epochs": epochs, "batch_size": batch, "lr": 0.05, "seed": 0, "device": device},
    }


def one_worker(tree: dict) -> tuple[float, dict]:
    torch.set_num_threads(1)
    trainer = Trainer(from_dict(tree))
    trainer.run()
    last = trainer.history.epochs[-1]
    return last["cost/train_s"] / trainer.epoch, last


def workers(tree: dict, n: int, gpus: float) -> tuple[float, dict, float]:
    cfg = from_dict(tree)
    config = {
        "base": cfg.to_dict(),
        "params": {},
        "sites": [],
        "data": tuning.put(build_data(cfg.data)),
        "threads": 1,
        "checkpoint_every": cfg.train.epochs,  # one checkpoint, at the end: Ray Train's result carries its metrics
        "checkpoint_s": 1e9,
    }
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        result = run_data_parallel(config, n, 1.0, gpus, storage, "scaling", 0)
        wall = time.perf_counter() - start
    m = result.metrics
    assert m is not None and "error" not in m, m
    train_s = m["cost/train_s"] / n  # per worker
    startup = wall - m["cost/device_s"] / n
    return train_s / cfg.train.epochs, m, startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--model", default=None, help="one model only (cnn, mlp, resnet18)")
    args = parser.parse_args()
    tuning.connect(None, num_cpus=max(2, args.workers))
    device = "cuda" if args.gpu else "cpu"
    epochs = 2 if args.smoke_test else 8
    cases = [("cnn", 32, 128), ("mlp", 256, 128)]
    if args.model:
        cases = [(args.model, 32 if args.model != "mlp" else 256, 256 if args.gpu else 128)]
    lines = [
        f"Device: {device}; {args.workers} workers against 1, one thread each, the same global batch; "
        f"{epochs} epochs of digits (1,006 training images), AdaLASE (default preset) with translate.",
        "",
        "| model | global batch | 1 worker s/epoch | "
        f"{args.workers} workers s/epoch | speed-up | efficiency | Ray Train start s | same final val acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, width, batch in cases[:1] if args.smoke_test else cases:
        tree = _tree(model, width, epochs, batch, device)
        t1, last1 = one_worker(tree)
        tn, lastn, startup = workers(tree, args.workers, 1.0 if args.gpu else 0.0)
        same = abs(last1["val/acc"] - lastn["val/acc"]) <= 1e-3
        lines.append(
            f"| {model} (width {width}) | {batch} | {t1:.3f} | {tn:.3f} | {t1 / tn:.2f} | "
            f"{t1 / tn / args.workers:.2f} | {startup:.1f} | {'yes' if same else 'no'} "
            f"({last1['val/acc']:.4f} / {lastn['val/acc']:.4f}) |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "Times per epoch are means over all epochs of the training phase (evaluation excluded). Each worker "
        "computes on its share of the batch and all-reduces one flat gradient per step (and one per "
        "pseudo-validation gradient).",
    ]
    if not args.gpu:
        lines.append(
            "\nThe cnn has BatchNorm, which normalises each worker's shard by itself: its accuracies differ "
            "(docs/distributed.md). GPU figures are still owed: NCCL across 2 workers needs 2 GPUs, and the "
            "machine lent to this project has one. On one with 2+, run "
            "`python benchmarks/scaling.py --gpu --workers 2 --model resnet18`."
        )
    path = write_result("scaling", "Data-parallel scaling of one trial", "\n".join(lines) + "\n", args.smoke_test)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
