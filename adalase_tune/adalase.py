"""The hypergradient behind AdaLASE (ALGORITHM.md section 3; T1-T2, Luketina et al. 2016).

With one SGD step ``theta_{t+1} = theta_t - alpha grad L_DA(theta_t, q)`` and the Hessian taken
as the identity, ``dL_val(theta_{t+1})/dq_l = -alpha <grad L_val(theta_{t+1}), grad L_l(theta_t)>``.
The engine keeps ``g_tr`` (the raw mini-batch gradient, before the optimiser step), steps, and
asks :class:`PseudoValidation` for ``g_val``; the policy turns the dot product into a q update.

Pseudo-validation data come only from the run's own training subset (``val_source: train``,
with the usual input augmentation and a random rotation) or from its held-out val split
(``holdout``), never from the test set: this is the fix to the official code's sampling.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ExperimentConfig
from .data import DataBundle, augment_inputs


def flat_grad(model: nn.Module) -> torch.Tensor:
    """All parameter gradients flattened into one vector (zeros where a gradient is missing)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters() if p.requires_grad])


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """Train-mode batch statistics, but running statistics left untouched (as the official code)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def rotate(x: torch.Tensor, degrees: np.ndarray) -> torch.Tensor:
    """Rotate each image of ``x`` by its own angle (bilinear, zero fill)."""
    theta = torch.as_tensor(np.deg2rad(degrees), dtype=x.dtype, device=x.device)
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class PseudoValidation:
    """One pseudo-validation batch per epoch, reused for every hypergradient of that epoch.

    ``ids`` holds the source indices of the current batch, so its provenance can be checked.
    """

    def __init__(self, cfg: ExperimentConfig, data: DataBundle):
        a = cfg.adalase
        self.split = data.train if a.val_source == "train" else data.val
        self.augment = data.input_augment and a.val_source == "train"
        self.rotate = a.val_rotate if (a.val_source == "train" and data.train.x.dim() == 4) else 0.0
        wanted = a.val_batch(cfg.train.batch_size)
        self.batch_size = min(wanted, len(self.split))
        self.x = self.y = self.ids = None

    def new_epoch(self, rng: np.random.Generator) -> None:
        pick = rng.choice(len(self.split), self.batch_size, replace=False)
        idx = torch.as_tensor(pick, device=self.split.y.device)
        x, self.y = self.split.x[idx], self.split.y[idx]
        if self.augment:
            x = augment_inputs(x, rng)
        if self.rotate:
            x = rotate(x, rng.uniform(-self.rotate, self.rotate, len(pick)))
        self.x, self.ids = x, self.split.ids[pick]

    def gradient(self, model: nn.Module, loss_fn) -> torch.Tensor:
        """``grad L_val`` at the current weights: train mode, no latent DA, BN stats untouched."""
        model.zero_grad(set_to_none=True)
        with frozen_batchnorm_stats(model):
            loss_fn(model, self.x, self.y).backward()
        g = flat_grad(model)
        model.zero_grad(set_to_none=True)
        return g

    @property
    def sample_passes(self) -> int:
        return self.batch_size


def hypergradient_dot(g_val: torch.Tensor, g_tr: torch.Tensor) -> float:
    """``<g_val, g_tr>`` in float64 (the q update is sensitive to its sign)."""
    d = torch.dot(g_val.double(), g_tr.double()).item()
    return d if math.isfinite(d) else float("nan")
