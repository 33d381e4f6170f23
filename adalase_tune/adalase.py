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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Optional, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import ConfigError, ExperimentConfig
from .data import DataBundle, Split, augment_inputs, stratified_split
from .distributed import World

if TYPE_CHECKING:
    from .policies import Policy

# a loss of (model, x, y), as the engine computes it for the pseudo-validation batch
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def flat_grad(
    model_or_params: Union[nn.Module, Sequence[nn.Parameter]], out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """All parameter gradients flattened into one vector (zeros where a gradient is missing).
    Takes a model or, on hot paths, the list of its trainable parameters; ``out``: a buffer to
    fill instead of a new tensor (on CPU a fresh one of this size costs page faults every step)."""
    params = trainable(model_or_params) if isinstance(model_or_params, nn.Module) else model_or_params
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    return torch.cat(grads) if out is None else torch.cat(grads, out=out)


@contextlib.contextmanager
def frozen_batchnorm_stats(bns: Sequence[_BatchNorm]) -> Iterator[None]:
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


class Pool(Protocol):
    """Where pseudo-validation batches come from: a :class:`~adalase_tune.data.Split`, or anything
    with ``take(idx)``, ``ids`` and ``len`` (:class:`~adalase_tune.loop.DatasetPool`)."""

    @property
    def ids(self) -> np.ndarray: ...

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __len__(self) -> int: ...


class PseudoValidation:
    """One pseudo-validation batch per epoch, reused for every hypergradient of that epoch.

    ``ids`` holds the source indices of the current batch, so its provenance can be checked.
    """

    def __init__(
        self, pool: Pool, batch_size: int, augment: bool = False, rotate: float = 0.0, world: Optional[World] = None
    ):
        self.world = world = world or World()
        self.split = pool  # a Split, or anything with ``take(idx)``, ``ids`` and ``len`` (:class:`DatasetPool`)
        self.augment, self.rotate = augment, rotate
        self.batch_size = min(batch_size, len(pool))
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

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, data: DataBundle, pool: Optional[Split] = None, world: Optional[World] = None
    ) -> PseudoValidation:
        """The built-in Trainer's source: ``pool`` (held out, as is) or the training subset itself
        (``val_source: train``, with the input augmentation and a random rotation of images)."""
        from_train = pool is None
        steps = -(-len(data.train) // cfg.train.batch_size)
        return cls(
            pool if pool is not None else data.train,
            cfg.adalase.val_batch(len(data.train) / steps),
            augment=data.input_augment and from_train,
            rotate=cfg.adalase.val_rotate if (from_train and len(data.input_shape) == 3) else 0.0,
            world=world,
        )

    def new_epoch(self, rng: np.random.Generator) -> None:
        pick = rng.choice(len(self.split), self.batch_size, replace=False)
        x, self.y = self.split.take(pick)
        if self.augment:
            x = augment_inputs(x, rng)
        if self.rotate:
            x = rotate(x, rng.uniform(-self.rotate, self.rotate, len(pick)))
        self.x, self.ids = x, self.split.ids[pick]

    def gradient(self, model: nn.Module, loss_fn: LossFn) -> torch.Tensor:
        """``grad L_val`` at the current weights: train mode, no latent DA, BN stats untouched."""
        if self._model is not model:  # the module lists, once per model (walking modules costs per step)
            self._model, self._params = model, trainable(model)
            self._bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        assert self.x is not None and self.y is not None, "new_epoch() draws the batch first"
        for p in self._params:
            p.grad = None
        x, y, whole = self.x, self.y, len(self.y)
        if self._params and x.device != self._params[0].device:  # a user's pool on another device
            x, y = x.to(self._params[0].device), y.to(self._params[0].device)
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

    def __init__(self, cfg: ExperimentConfig, direction: StepDirection):
        a = cfg.adalase
        self.every, self.credit = a.every_steps(), a.credit_mode()
        self.direction = direction
        self.window: list[tuple[int, torch.Tensor, float]] = []  # (arm, direction of its step, scale)
        self.g_val: Optional[torch.Tensor] = None  # reuse: the latest pseudo-validation gradient
        self._spare: list[torch.Tensor] = []  # buffers of fed directions, refilled by the next steps

    def updates(self, steps: int) -> int:
        """Hypergradients a run of ``steps`` training steps gives (with a site drawn at every step)."""
        return math.ceil(steps / self.every) if self.credit == "step" else steps

    def collect(self, step: int, site: Optional[int]) -> None:
        """After backward, before the optimizer's step: keep where this step's gradient moves the
        weights (:class:`StepDirection`) if the step gets a hypergradient."""
        if site is not None and (self.credit != "step" or step % self.every == 0):
            p = self.direction.params[0]
            spare = self._spare.pop() if self._spare else None
            if spare is not None and (spare.dtype != p.dtype or spare.device != p.device):
                spare = None  # the model changed dtype or device
            self.window.append((site, *self.direction(spare)))

    def fresh_due(self, step: int, last_of_epoch: bool) -> bool:
        """After the optimizer step ``step``: is a new pseudo-validation gradient due?"""
        if not self.window:
            return False
        if self.credit == "window":
            return (step + 1) % self.every == 0 or last_of_epoch
        return step % self.every == 0 or self.g_val is None

    def feed(self, g_val: Optional[torch.Tensor], policy: Policy) -> None:
        """Feed the kept gradients against ``g_val`` (a fresh one), or against the kept ``g_val``
        (``reuse``) when None; other credits wait for their next fresh one."""
        if g_val is not None and self.credit == "reuse":
            self.g_val = g_val
        elif g_val is None:
            if self.credit != "reuse" or self.g_val is None:
                return
            g_val = self.g_val
        for site, g_tr, scale in self.window:
            policy.observe(site, scale * hypergradient_dot(g_val, g_tr))
        self._spare.extend(g_tr for _, g_tr, _ in self.window)
        self.window.clear()

    def state_dict(self) -> dict:
        assert not self.window, "a checkpoint is taken between steps, when no gradient is pending"
        return {"g_val": None if self.g_val is None else self.g_val.cpu()}

    def load_state_dict(self, state: dict, device: Union[torch.device, str]) -> None:
        g = state.get("g_val")
        self.g_val = None if g is None else g.to(device)


def hypergradient_dot(g_val: torch.Tensor, g_tr: torch.Tensor) -> float:
    """``<g_val, g_tr>`` in the gradients' own precision (float64 for a float64 model)."""
    d = torch.dot(g_val, g_tr).item()
    return d if math.isfinite(d) else float("nan")


class StepDirection:
    """How the optimizer's coming step moves the weights per unit of this step's gradient.

    ``theta_{t+1} = theta_t - alpha_t * u(g)``, with ``g = sum_l q_l g_l`` in expectation, so
    ``dL_val(theta_{t+1})/dq_l = -alpha_t <g_val, J g_l>`` with ``J = du/dg``. Called after
    backward and before ``optimizer.step()``, it returns ``(J g, scale)`` as a flat vector and a
    factor (``J`` is a multiple of the identity for SGD: then the vector is ``g`` itself, no copy
    is scaled). The hypergradient ``<g_val, J g_l>`` is thus ``-1/alpha_t`` times the exact
    derivative for this step, per unit of the first parameter group's learning rate.

    - SGD: ``u = buf`` (momentum) or ``g + mu buf`` (Nesterov), ``buf = mu buf + (1 - dampening) g``
      (``buf = g`` at the first step); weight decay adds ``lambda theta``, which does not depend on q.
    - Adam, AdamW (amsgrad included): ``J`` is diagonal, from the moments after this step.
    - ``direction="gradient"`` takes ``J = I`` for any optimizer (the paper's code).
    """

    KNOWN = "torch.optim.SGD, Adam and AdamW"

    def __init__(self, optimizer: Optional[torch.optim.Optimizer], params: list[nn.Parameter], kind: str = "step"):
        self.optimizer, self.params = optimizer, params
        if kind == "step" and optimizer is not None:
            if not isinstance(optimizer, (torch.optim.SGD, torch.optim.Adam)):
                raise ConfigError(
                    f"optimizer = {type(optimizer).__name__}: AdaLASE differentiates the step of {self.KNOWN}; "
                    "pass direction='gradient' to use the raw gradient (the paper's approximation) with any other"
                )
            if any(g.get("maximize") for g in optimizer.param_groups):
                raise ConfigError("optimizer maximize=True: AdaLASE minimises a loss; negate the loss instead")
        self.kind = "gradient" if optimizer is None else kind
        self._groups: tuple = ()
        self._group: dict[int, dict] = {}
        self._covered = True

    def _map_groups(self) -> None:
        """Each parameter's group (rebuilt when the optimizer's groups are replaced, e.g. by its
        ``load_state_dict``, since the learning rate is read from them)."""
        groups = tuple(id(g) for g in self.optimizer.param_groups)  # type: ignore[union-attr]
        if groups != self._groups:
            self._groups = groups
            self._group = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}  # type: ignore[union-attr]
            self._covered = all(id(p) in self._group for p in self.params)  # else the others' J is 0

    def __call__(self, out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, float]:
        """``(J g, scale)``; ``out``: a buffer of the flat size to write the vector into."""
        if self.kind == "gradient":
            return flat_grad(self.params, out), 1.0
        self._map_groups()
        ref = float(self.optimizer.param_groups[0]["lr"]) or 1.0  # type: ignore[union-attr]
        if isinstance(self.optimizer, torch.optim.SGD):
            # SGD's J is a multiple of the identity per group: one factor per group, not per tensor
            factor = {id(g): self._sgd(g) * float(g["lr"]) / ref for g in self.optimizer.param_groups}
            if len(set(factor.values())) == 1 and self._covered:
                return flat_grad(self.params, out), next(iter(factor.values()))
            scaled = [_grad(p).reshape(-1) * factor[id(self._group[id(p)])] if id(p) in self._group
                      else torch.zeros(p.numel(), dtype=p.dtype, device=p.device) for p in self.params]  # fmt: skip
            return (torch.cat(scaled) if out is None else torch.cat(scaled, out=out)), 1.0
        parts = [
            (self._adam(p) * (float(self._group[id(p)]["lr"]) / ref) * _grad(p)).reshape(-1)
            if id(p) in self._group
            else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            for p in self.params
        ]
        return (torch.cat(parts) if out is None else torch.cat(parts, out=out)), 1.0

    def _sgd(self, group: dict) -> float:
        """``du/dg`` of SGD's step for a group (its parameters share their momentum buffers' age)."""
        mu = group["momentum"]
        if mu == 0:
            return 1.0
        p = next((p for p in group["params"] if p.grad is not None), group["params"][0])  # one that steps
        first = self.optimizer.state.get(p, {}).get("momentum_buffer") is None  # type: ignore[union-attr]
        own = 1.0 if first else 1.0 - group["dampening"]
        return 1.0 + mu * own if group["nesterov"] else own

    def _adam(self, p: nn.Parameter) -> torch.Tensor:
        """``du/dg`` per element for Adam's step ``u = m_hat / (sqrt(v_hat) + eps)`` (per unit lr)."""
        group, state = self._group[id(p)], self.optimizer.state.get(p, {})  # type: ignore[union-attr]
        b1, b2 = (float(b) for b in group["betas"])
        g = _grad(p)
        if group["weight_decay"] and not group.get("decoupled_weight_decay", False):
            g = g + group["weight_decay"] * p.detach()
        t = float(state["step"]) + 1 if "step" in state else 1.0
        m = b1 * state["exp_avg"] + (1 - b1) * g if state else (1 - b1) * g
        v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g if state else (1 - b2) * g * g
        moves = torch.ones_like(v)
        if group["amsgrad"] and state:
            moves = (v >= state["max_exp_avg_sq"]).to(v.dtype)  # the running max follows v only where v is it
            v = torch.maximum(v, state["max_exp_avg_sq"])
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        s = (v / bc2).sqrt()
        denom = s + group["eps"]
        ds = torch.where(s > 0, (1 - b2) * g * moves / (bc2 * s.clamp_min(torch.finfo(s.dtype).tiny)), 0.0)
        return ((1 - b1) / bc1) / denom - (m / bc1) * ds / denom**2


def _grad(p: nn.Parameter) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)
