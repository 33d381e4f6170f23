"""CutMix (Yun et al. 2019): paste a box of area (1 - lam) from the partner; lam ~ Beta(a, a)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ._base import Mix, Op, box_mask, spatial_axes

if TYPE_CHECKING:
    from ..distributed import Draws


class CutMix(Op):
    """Targets are mixed by the box's true (clipped) area; strength is alpha (default 0.5)."""

    name = "cutmix"
    default_strength = 0.5
    strength_meaning = "Beta(alpha, alpha) parameter"
    mixes_targets = True

    def apply(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]) -> tuple[torch.Tensor, Mix]:
        n = h.shape[0]
        partner = rng.permutation(n)
        lam = rng.beta(self.strength, self.strength, n)
        axes = spatial_axes(h)
        ratio = np.sqrt(1.0 - lam) if len(axes) == 2 else 1.0 - lam
        sides = [np.floor(h.shape[a] * ratio).astype(np.int64) for a in axes]
        mask, area = box_mask(h, rng, sides)
        total = int(np.prod([h.shape[a] for a in axes]))
        idx = torch.as_tensor(partner, device=h.device)
        mixed = torch.where(mask, h[idx], h)
        lam_true = torch.as_tensor(1.0 - area / total, dtype=torch.float32, device=h.device)
        return mixed, (idx, lam_true)
