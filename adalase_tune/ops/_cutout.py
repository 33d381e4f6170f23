"""Cutout (DeVries & Taylor 2017): zero a per-sample square of side floor(H * strength)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ._base import Mix, Op, box_mask, spatial_axes, warn_once

if TYPE_CHECKING:
    from ..distributed import Draws


class Cutout(Op):
    """Square of side ``floor(strength * H)`` (default 1/2), centre uniform, clipped; on (N, D)
    features a contiguous run of ``floor(strength * D)`` units."""

    name = "cutout"
    default_strength = 0.5
    strength_meaning = "side of the zeroed box as a fraction of the map side"

    def apply(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]) -> tuple[torch.Tensor, Mix]:
        n = h.shape[0]
        sides = [np.full(n, int(h.shape[a] * self.strength), dtype=np.int64) for a in spatial_axes(h)]
        if min(s[0] for s in sides) == 0:
            warn_once(
                ("cutout", tuple(h.shape[1:])),
                f"cutout of strength {self.strength} does nothing "
                f"on features of shape {tuple(h.shape[1:])} (box side 0)",
            )
        mask, _ = box_mask(h, rng, sides)
        return h.masked_fill(mask, 0), None
