"""``motifs``: a synthetic task whose best DA site is known by construction.

Each sample is a 1-D signal of length ``LENGTH``: Gaussian noise plus one of ``CLASSES`` fixed
random motifs (length ``MOTIF``) placed at a random position. The label is the motif, not its
position, so a shift of the *input* by up to ``MARGIN`` positions never changes the label: the
motif lies at least ``MARGIN`` positions from either border, so the ``translate`` op at its
default strength (a shift of at most ``floor(0.2 * 32) = 6``) keeps it whole. At a hidden layer
of an MLP the units have no order, so the same shift scrambles the features instead of
preserving the label. With few training samples an MLP (which has no built-in shift
invariance) sees each motif at only a few positions, so translate at the input helps, and at
the hidden layers it hurts. ``docs/known_answer.md`` explains the construction.

The samples are generated from a fixed seed: the dataset is the same for every run, as digits is.
"""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from ._sources import Raw

LENGTH, MOTIF, CLASSES, MARGIN = 32, 8, 10, 6
SAMPLES = 6000
NOISE = 0.3
DATASET_SEED = 20240826


def motif_bank(rng: np.random.Generator) -> np.ndarray:
    """``CLASSES`` zero-mean, unit-norm motifs, resampled until no two are near-shifts of each other."""
    while True:
        bank = rng.standard_normal((CLASSES, MOTIF))
        bank -= bank.mean(1, keepdims=True)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
        bank *= np.sqrt(MOTIF)  # unit amplitude per position
        if _max_shifted_similarity(bank) < 0.75:
            return bank.astype(np.float32)


def _max_shifted_similarity(bank: np.ndarray) -> float:
    """Largest normalised cross-correlation between two different motifs at any overlap >= half."""
    worst = 0.0
    for i in range(len(bank)):
        for j in range(len(bank)):
            if i == j:
                continue
            full = np.correlate(bank[i], bank[j], mode="full")
            centre = len(full) // 2
            half = MOTIF // 2
            worst = max(worst, float(np.abs(full[centre - half : centre + half + 1]).max()) / MOTIF)
    return worst


def generate_motifs(n: int, seed: int = DATASET_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (n, LENGTH) float32, y (n,) int64, positions (n,))``, the same for the same seed."""
    rng = np.random.default_rng(seed)
    bank = motif_bank(rng)
    y = np.arange(n) % CLASSES
    rng.shuffle(y)
    pos = rng.integers(MARGIN, LENGTH - MOTIF - MARGIN + 1, n)
    x = (NOISE * rng.standard_normal((n, LENGTH))).astype(np.float32)
    for i in range(n):
        x[i, pos[i] : pos[i] + MOTIF] += bank[y[i]]
    return x, y.astype(np.int64), pos


def load_motifs(cfg: DataConfig) -> Raw:
    x, y, _ = generate_motifs(SAMPLES)
    return Raw(
        x, y, scalar_norm=True, num_classes=CLASSES
    )  # one mean/std: per-position statistics would break shift symmetry


SCRAMBLE_SEED = 7


def scramble_order() -> np.ndarray:
    """The fixed permutation of the ``LENGTH`` positions that ``motifs_scrambled`` applies."""
    return np.random.default_rng(SCRAMBLE_SEED).permutation(LENGTH)


def load_scrambled_motifs(cfg: DataConfig) -> Raw:
    """``motifs_scrambled``: the motifs samples with their positions in a fixed random order
    (``x[:, scramble_order()]``). A shift of this input moves values between unrelated positions,
    so ``translate`` at the input destroys the motif; a network whose first layer undoes the order
    (:func:`adalase_tune.known_answer.write_unscrambler`) has the plain signal at its first hidden
    layer, where the same shift keeps the label (docs/known_answer.md)."""
    x, y, _ = generate_motifs(SAMPLES)
    return Raw(x[:, scramble_order()], y, scalar_norm=True, num_classes=CLASSES)
