"""The hypergradient behind AdaLASE (docs/algorithm.md; T1-T2, Luketina et al. 2016).

With one SGD step ``theta_{t+1} = theta_t - alpha grad L_DA(theta_t, q)`` and the Hessian taken
as the identity, ``dL_val(theta_{t+1})/dq_l = -alpha <grad L_val(theta_{t+1}), grad L_l(theta_t)>``.
The engine keeps ``g_tr`` (the raw mini-batch gradient, before the optimiser step), steps, and
asks :class:`PseudoValidation` for ``g_val``; the policy turns the dot product into a q update.

Pseudo-validation data come only from the run's own training subset: all of it, with the usual
input augmentation and a random rotation (``val_source: train``, the paper's form), or a
stratified part of it that is held out of training (``holdout``, ``adalase.holdout_fraction``).
Never from the val split (which selects epochs and configurations) or the test set: this is the
fix to the official code's sampling, which draws from the full training set.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import ConfigError, ExperimentConfig
from .data import DataBundle, Split, augment_inputs, stratified_split
from .distributed import World


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def flat_grad(model_or_params) -> torch.Tensor:
    """All parameter gradients flattened into one vector (zeros where a gradient is missing).
    Takes a model or, on hot paths, the list of its trainable parameters."""
    params = trainable(model_or_params) if isinstance(model_or_params, nn.Module) else model_or_params
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


@contextlib.contextmanager
def frozen_batchnorm_stats(bns: Sequence[_BatchNorm]):
    """Train-mode batch statistics, but running statistics left untouched (as the official code)."""
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

    def __init__(
        self, cfg: ExperimentConfig, data: DataBundle, pool: Optional[Split] = None, world: Optional[World] = None
    ):
        a = cfg.adalase
        self.world = world = world or World()
        from_train = pool is None
        self.split: Split = pool if pool is not None else data.train
        self.augment = data.input_augment and from_train
        self.rotate = a.val_rotate if (from_train and len(data.input_shape) == 3) else 0.0
        steps = -(-len(data.train) // cfg.train.batch_size)
        wanted = a.val_batch(len(data.train) / steps)
        self.batch_size = min(wanted, len(self.split))
        if self.batch_size < world.size:
            raise ConfigError(
                f"the pseudo-validation batch ({self.batch_size} samples) is smaller than the {world.size} "
                "workers it is sharded over; set adalase.val_batch_size to at least the number of workers"
            )
        self.x: Optional[torch.Tensor] = None
        self.y: Optional[torch.Tensor] = None
        self.ids: Optional[np.ndarray] = None
        self._model: Optional[nn.Module] = None
        self._params: list[nn.Parameter] = []
        self._bns: list[_BatchNorm] = []

    def new_epoch(self, rng: np.random.Generator) -> None:
        pick = rng.choice(len(self.split), self.batch_size, replace=False)
        x, self.y = self.split.take(pick)
        if self.augment:
            x = augment_inputs(x, rng)
        if self.rotate:
            x = rotate(x, rng.uniform(-self.rotate, self.rotate, len(pick)))
        self.x, self.ids = x, self.split.ids[pick]

    def gradient(self, model: nn.Module, loss_fn) -> torch.Tensor:
        """``grad L_val`` at the current weights: train mode, no latent DA, BN stats untouched."""
        if self._model is not model:  # the module lists, once per model (walking modules costs per step)
            self._model, self._params = model, trainable(model)
            self._bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        assert self.x is not None and self.y is not None, "new_epoch() draws the batch first"
        for p in self._params:
            p.grad = None
        x, y, whole = self.x, self.y, len(self.y)
        if self.world.parallel:  # the batch is sharded: each worker its part, then the global mean
            shard = self.world.shard(len(y))
            x, y = x[shard], y[shard]
        with frozen_batchnorm_stats(self._bns):
            loss_fn(model, x, y).backward()
        self.world.average_gradients(self._params, len(y), whole)
        g = flat_grad(self._params)
        for p in self._params:
            p.grad = None
        return g

    @property
    def sample_passes(self) -> int:
        return self.batch_size


def hold_out(cfg: ExperimentConfig, data: DataBundle) -> tuple[DataBundle, Optional[Split]]:
    """For ``val_source: holdout``: ``(data without the held-out samples, the held-out pool)``.

    A stratified ``holdout_fraction`` of the run's training subset, drawn with the subset's seed
    (:meth:`ExperimentConfig.subset_seed`); they are never trained on.
    """
    if cfg.adalase.val_source != "holdout":
        return data, None
    train = data.train
    y = train.y.cpu().numpy()
    kept, held = stratified_split(y, cfg.adalase.holdout_fraction, cfg.subset_seed() + 7)
    if len(held) == 0 or len(kept) == 0:
        raise ConfigError(
            f"adalase.holdout_fraction = {cfg.adalase.holdout_fraction}: holds out {len(held)} of "
            f"the {len(y)} training samples, leaving {len(kept)}; choose a fraction that leaves both "
            "parts non-empty, or adalase.val_source=train"
        )
    return replace(data, train=train.subset(kept)), train.subset(held)


class Hypergradient:
    """Which training steps get a hypergradient, and when a pseudo-validation gradient is taken.

    - ``credit: step`` (T1-T2, as the paper's code): every ``every`` steps, keep that step's raw
      gradient ``g_l(theta_t)``, step, take ``g_val(theta_{t+1})`` and feed ``<g_val, g_l>``.
    - ``credit: reuse``: the same fresh hypergradient every ``every`` steps, and every step in
      between is fed ``<g_val, g_l(theta_i)>`` with the latest ``g_val`` (at most ``every - 1``
      steps old). One pseudo-validation pass then serves ``every`` hypergradients.
    - ``credit: window``: keep every step's raw gradient; after each ``every``-th step (and after
      an epoch's last step) take one ``g_val`` at the window's end and feed it against each of
      them: how each step of the window changed the pseudo-validation loss at its end, to first
      order (a longer-horizon signal). It holds up to ``every`` gradient copies.

    ``benchmarks/results/presets.md`` measures all three. The kept ``g_val`` of ``reuse`` is part
    of the run's state, so a resumed run replays an uninterrupted one exactly.
    """

    def __init__(self, cfg: ExperimentConfig, steps_per_epoch: int):
        a = cfg.adalase
        self.every, self.credit = a.every_steps(), a.credit_mode()
        self.steps_per_epoch = steps_per_epoch
        self.window: list[tuple[int, torch.Tensor]] = []
        self.g_val: Optional[torch.Tensor] = None  # reuse: the latest pseudo-validation gradient
        self.params: Optional[list] = None

    def updates(self, epochs: int) -> int:
        """Hypergradients a run of ``epochs`` gives (with a site drawn at every step)."""
        if self.credit == "step":
            return math.ceil(epochs * self.steps_per_epoch / self.every)
        return epochs * self.steps_per_epoch

    def collect(self, step: int, site, model: nn.Module) -> None:
        """After backward: keep this step's raw gradient if it gets a hypergradient."""
        if site is not None and (self.credit != "step" or step % self.every == 0):
            if self.params is None:
                self.params = trainable(model)
            self.window.append((site, flat_grad(self.params)))

    def fresh_due(self, step: int, last_of_epoch: bool) -> bool:
        """After the optimizer step ``step``: is a new pseudo-validation gradient due?"""
        if not self.window:
            return False
        if self.credit == "window":
            return (step + 1) % self.every == 0 or last_of_epoch
        return step % self.every == 0 or self.g_val is None

    def feed(self, g_val: Optional[torch.Tensor], policy) -> None:
        """Feed the kept gradients against ``g_val`` (a fresh one), or against the kept ``g_val``
        (``reuse``) when None; other credits wait for their next fresh one."""
        if g_val is not None and self.credit == "reuse":
            self.g_val = g_val
        elif g_val is None:
            if self.credit != "reuse" or self.g_val is None:
                return
            g_val = self.g_val
        for site, g_tr in self.window:
            policy.observe(site, hypergradient_dot(g_val, g_tr))
        self.window.clear()

    def state_dict(self) -> dict:
        assert not self.window, "a checkpoint is taken between steps, when no gradient is pending"
        return {"g_val": None if self.g_val is None else self.g_val.cpu()}

    def load_state_dict(self, state: dict, device) -> None:
        g = state.get("g_val")
        self.g_val = None if g is None else g.to(device)


def hypergradient_dot(g_val: torch.Tensor, g_tr: torch.Tensor) -> float:
    """``<g_val, g_tr>`` in the gradients' own precision (float64 for a float64 model)."""
    d = torch.dot(g_val, g_tr).item()
    return d if math.isfinite(d) else float("nan")
