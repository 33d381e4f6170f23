"""mixup (Zhang et al. 2018), per-sample lam ~ Beta(alpha, alpha), as docs/algorithm.md describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ._base import Mix, Op, per_sample

if TYPE_CHECKING:
    from ..distributed import Draws


class Mixup(Op):
    """``h~ = lam h + (1 - lam) h[partner]``; strength is alpha (default 1)."""

    name = "mixup"
    default_strength = 1.0
    strength_meaning = "Beta(alpha, alpha) parameter"
    mixes_targets = True

    def apply(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]) -> tuple[torch.Tensor, Mix]:
        n = h.shape[0]
        partner = rng.permutation(n)
        lam = rng.beta(self.strength, self.strength, n).astype(np.float32)
        lam_t = per_sample(lam, h).to(h.dtype)
        idx = per_sample(partner, h).view(-1)
        return lam_t * h + (1 - lam_t) * h[idx], (idx, per_sample(lam, h).view(-1))
