"""Streaming (``data.stream: true``) against in-memory ImageFolder data, side by side in one run:
the same generated folder of PNGs, the same model and batches, time per training epoch, and
where the streaming time goes (decoding a PNG, the model's step).

    python benchmarks/streaming.py
    python benchmarks/streaming.py --smoke-test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adalase_tune.config import from_dict
from adalase_tune.engine import Trainer

from _common import write_result


def write_folder(root: Path, per_class: int, side: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("test", max(4, per_class // 4))):
        for label in range(3):
            (root / part / f"c{label}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
                img[2 + 3 * label : 4 + 3 * label] = 250
                Image.fromarray(img).save(root / part / f"c{label}" / f"{i:05d}.png")
    return root


def epoch_s(tree: dict) -> tuple[float, float]:
    """(median training seconds per epoch after the first, seconds to build the run)."""
    start = time.perf_counter()
    trainer = Trainer(from_dict(tree))
    built = time.perf_counter() - start
    trainer.run()
    train = [m["cost/train_s"] for m in trainer.history.epochs]
    return statistics.median(b - a for a, b in zip(train, train[1:])), built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_class, size, epochs = (40, 32, 2) if args.smoke_test else (1000, 32, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "images", per_class, 24)
        n = sum(1 for _ in root.rglob("*.png"))

        def tree(stream: bool, workers: int) -> dict:
            return {
                "data": {
                    "name": "imagefolder",
                    "path": str(root),
                    "image_size": size,
                    "stream": stream,
                    "num_workers": workers,
                },
                "model": {"name": "cnn", "width": 16},
                "selection": {"method": "uniform"},
                "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "device": "cpu"},
            }

        rows = []
        for label, stream, workers in (
            ("in memory", False, 0),
            ("streaming, 0 workers (decoded in the training process)", True, 0),
            ("streaming, 2 workers", True, 2),
        ):
            per_epoch, built = epoch_s(tree(stream, workers))
            rows.append((label, per_epoch, built))
            print(f"{label}: {per_epoch:.2f} s/epoch, built in {built:.1f} s", flush=True)
        from adalase_tune.data._stream import _Images

        paths = sorted(str(p) for p in (root / "train").rglob("*.png"))[:300]
        images = _Images(paths, size)
        start = time.perf_counter()
        for i in range(len(paths)):
            images.decode(i)
        decode_ms = (time.perf_counter() - start) / len(paths) * 1000
    base = rows[0][1]
    rows_n = int(per_class * 3 * 0.8)  # the training split: 80% of train/ (val holds out 20%)
    lines = [
        f"{n} PNGs (24×24, read at {size}×{size}; 3 classes), cnn width 16, batch 64, uniform, CPU with one torch "
        f"thread; {epochs} epochs per run, the first left out. Ratios are to the in-memory run in the same process.",
        "",
        "| data path | s / training epoch | × in memory | building the run (listing or reading the files) |",
        "|---|---|---|---|",
        *[f"| {label} | {t:.2f} | {t / base:.2f} | {b:.1f} s |" for label, t, b in rows],
        "",
        f"Where the streaming time goes: decoding one PNG (open, resize, to tensor) takes {decode_ms:.2f} ms here, "
        f"so an epoch of {rows_n} training images spends about {decode_ms * rows_n / 1000:.1f} s decoding, "
        "split over the workers; the rest is the model's step, "
        "as in memory. On this 2-core machine, 2 workers compete with the training process for the cores; "
        "give the loader as many workers as the cores left over by training (data.num_workers).",
    ]
    path = write_result("streaming", "Streaming against in-memory data", "\n".join(lines) + "\n", args.smoke_test)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
