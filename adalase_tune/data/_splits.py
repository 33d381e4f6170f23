"""Class-stratified, seeded splits and subsets (the paper's sample-size axis)."""

from __future__ import annotations

import numpy as np


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Largest-remainder allocation of ``n`` over classes in proportion to ``counts``."""
    exact = counts * n / counts.sum()
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    return np.minimum(take, counts)


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified subset of size ``n``, sorted; the same for the same seed."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = _allocate(counts, n)
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out) with ``fraction`` of each class held out."""
    held = stratified_subset(y, int(round(len(y) * fraction)), seed)
    kept = np.setdiff1d(np.arange(len(y)), held)
    return kept, held
