"""Builders ``(cfg: DataConfig) -> {"train": Dataset, "test": Dataset[, "val": Dataset]}``: small
synthetic data, so that the tests run in seconds on two CPUs."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = 3


class Patches(Dataset):
    """3x16x16 images: class k is a bright 4x4 patch in quadrant k, plus noise."""

    classes = [f"patch{k}" for k in range(CLASSES)]

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.y = np.arange(n) % CLASSES
        self.x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
        for i, k in enumerate(self.y):
            r, c = 2 + 8 * (k // 2), 2 + 8 * (k % 2)
            self.x[i, :, r : r + 4, c : c + 4] += 1.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def build_images(cfg):
    """Train and test Datasets; val is held out of train (``data.val_fraction``)."""
    return {"train": Patches(240, seed=0), "test": Patches(60, seed=1)}


def _vectors(n: int, seed: int, dim: int = 12):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1.5, (CLASSES, dim))
    y = np.arange(n) % CLASSES
    return torch.tensor(centres[y] + rng.normal(0, 1, (n, dim)), dtype=torch.float32), torch.tensor(y)


def build_vectors(cfg):
    """(N, D) tensors as pairs (x, y), with a val split of their own."""
    return {"train": _vectors(240, 0), "val": _vectors(60, 1), "test": _vectors(60, 2)}


def build_bad_splits(cfg):
    return {"training": _vectors(10, 0)}
