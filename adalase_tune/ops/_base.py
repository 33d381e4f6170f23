"""The op contract: ``op(h, rng, torch_generator) -> (h_augmented, mix)``.

``mix`` is ``(partner_index, lam)`` for ops that mix samples (targets become
``lam * y + (1 - lam) * y[partner]``) and ``None`` otherwise. Ops work on ``(N, C, H, W)`` maps,
``(N, D)`` features and ``(N, L, D)`` token sequences (where the sequence axis plays the spatial
role). Per-sample parameters come from the run's numpy generator, so a seed replays them.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from ..distributed import Draws

Mix = Optional[tuple[torch.Tensor, torch.Tensor]]
_warned: set[Hashable] = set()


class Op:
    """Base class: subclasses set ``name`` and ``default_strength`` and implement ``apply``."""

    name = ""
    default_strength = 1.0
    strength_meaning = ""
    mixes_targets = False

    def __init__(self, strength: Optional[float] = None):
        self.strength = self.default_strength if strength is None else float(strength)

    def __call__(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Mix]:
        if h.dim() not in (2, 3, 4):
            raise ValueError(f"augment.op = {self.name!r} works on (N,D), (N,L,D) or (N,C,H,W), got {tuple(h.shape)}")
        return self.apply(h, rng, gen)

    def apply(
        self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]
    ) -> tuple[torch.Tensor, Mix]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength})"


def warn_once(key: Hashable, message: str) -> None:
    """Warn the first time only: an op that does nothing says so once rather than pretend."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def per_sample(values: np.ndarray, h: torch.Tensor) -> torch.Tensor:
    """A host array of one value per sample as a tensor on ``h``'s device, broadcastable to ``h``."""
    t = torch.as_tensor(np.asarray(values), device=h.device)
    return t.view(-1, *([1] * (h.dim() - 1)))


def spatial_axes(h: torch.Tensor) -> tuple[int, ...]:
    """The axes an op moves over: (H, W) for maps, D for features, L for token sequences."""
    return {4: (2, 3), 3: (1,), 2: (1,)}[h.dim()]


def interval_mask(h: torch.Tensor, axis: int, start: np.ndarray, length: np.ndarray) -> torch.Tensor:
    """Per-sample boolean mask, True on ``[start, start+length)`` along ``axis``, shaped to broadcast."""
    size = h.shape[axis]
    pos = torch.arange(size, device=h.device).view(1, size)
    s = torch.as_tensor(start, device=h.device).view(-1, 1)
    e = s + torch.as_tensor(length, device=h.device).view(-1, 1)
    m = (pos >= s) & (pos < e)
    shape = [h.shape[0]] + [1] * (h.dim() - 1)
    shape[axis] = size
    return m.view(shape)


def centred_box(rng: Draws, n: int, size: int, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample [start, length) of a run of ``side`` centred uniformly on the axis, clipped."""
    centre = rng.integers(0, size, n)
    lo = np.clip(centre - side // 2, 0, size)
    hi = np.clip(centre - side // 2 + side, 0, size)
    return lo, hi - lo


def box_mask(h: torch.Tensor, rng: Draws, sides: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    """Mask of a per-sample box (one side length per spatial axis) and each box's true size."""
    n = h.shape[0]
    mask = None
    size = np.ones(n, dtype=np.int64)
    for axis, side in zip(spatial_axes(h), sides):
        start, length = centred_box(rng, n, h.shape[axis], side)
        m = interval_mask(h, axis, start, length)
        mask = m if mask is None else mask & m
        size *= length
    assert mask is not None, "spatial_axes gives every map at least one axis"
    return mask, size
