"""Gaussian noise: h + strength * std(h) * eps, eps ~ N(0, 1), std over the whole batch tensor."""

import torch

from ._base import Op


class Noise(Op):
    """Additive Gaussian noise scaled to the features' own spread (strength default 0.1)."""

    name = "noise"
    default_strength = 0.1
    strength_meaning = "noise std as a fraction of the features' std"

    def apply(self, h, rng, gen):
        if gen is None:
            gen = torch.Generator(device=h.device)
            gen.manual_seed(int(rng.integers(2**62)))
        eps = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
        return h + self.strength * h.detach().std() * eps, None
