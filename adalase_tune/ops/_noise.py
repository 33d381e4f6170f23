"""Gaussian noise: h + strength * std(h) * eps, eps ~ N(0, 1), std over the whole batch tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ._base import Mix, Op

if TYPE_CHECKING:
    from ..distributed import Draws


class Noise(Op):
    """Additive Gaussian noise scaled to the features' own spread (strength default 0.1)."""

    name = "noise"
    default_strength = 0.1
    strength_meaning = "noise std as a fraction of the features' std"

    def apply(self, h: torch.Tensor, rng: Draws, gen: Optional[torch.Generator]) -> tuple[torch.Tensor, Mix]:
        if gen is None:
            gen = torch.Generator(device=h.device)
            gen.manual_seed(int(rng.integers(2**62)))
        eps = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
        return h + self.strength * h.detach().std() * eps, None
