"""Translation: per-sample integer shift in [-floor(strength * H), +floor(strength * H)], zero fill."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ._base import Mix, Op, spatial_axes, warn_once


def shift(h: torch.Tensor, axis: int, offset: np.ndarray) -> torch.Tensor:
    """Shift each sample by its own integer ``offset`` along ``axis``, filling with zeros."""
    size = h.shape[axis]
    shape = [h.shape[0]] + [1] * (h.dim() - 1)
    shape[axis] = size
    src = torch.arange(size, device=h.device).view(1, size) - torch.as_tensor(offset, device=h.device).view(-1, 1)
    valid = ((src >= 0) & (src < size)).view(shape)
    index = src.clamp(0, size - 1).view(shape).expand_as(h)
    return torch.gather(h, axis, index) * valid.to(h.dtype)


if TYPE_CHECKING:
    from ..distributed import Draws


class Translate(Op):
    """Shift by up to ``floor(strength * side)`` pixels on each spatial axis (default 1/5).

    On maps of side <= 4 the shift is 0 and the op is a no-op: it warns once.
    """

    name = "translate"
    default_strength = 0.2
    strength_meaning = "largest shift as a fraction of the map side"

    def apply(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]) -> tuple[torch.Tensor, Mix]:
        out = h
        for axis in spatial_axes(h):
            reach = int(h.shape[axis] * self.strength)
            if reach == 0:
                warn_once(
                    ("translate", tuple(h.shape[1:])),
                    f"translate of strength {self.strength} is a "
                    f"no-op on features of shape {tuple(h.shape[1:])} (largest shift 0)",
                )
                continue
            out = shift(out, axis, rng.integers(-reach, reach + 1, h.shape[0]))
        return out, None
