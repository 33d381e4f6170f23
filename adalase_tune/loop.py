"""AdaLASE in any PyTorch training loop (docs/own_loop.md); the built-in Trainer uses it too.

One :class:`AdaLASE` object owns what the method adds to a loop: the arms (sites, or (site, op)
pairs), the selection policy and its q, the pseudo-validation source, the schedule of
hypergradients and their cost. Per batch, :meth:`AdaLASE.loss` samples an arm and runs the
forward pass with the op at that site; :meth:`AdaLASE.step` takes the optimizer's step and,
when the preset says so, the hypergradient of that step. Example::

    ada = AdaLASE(model, optimizer, sites=["layer1", "layer2"], val=val_set,
                  epochs=10, steps_per_epoch=len(loader))
    for epoch in range(10):
        for x, y in loader:
            optimizer.zero_grad()
            ada.loss(x, y).backward()   # instead of F.cross_entropy(model(x), y).backward()
            ada.step()                  # instead of optimizer.step()
    ada.q                               # where AdaLASE learned to augment
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import keys
from .adalase import PseudoValidation, StepDirection, trainable
from .arms import build_arms, build_ops, marginals, variant_labels
from .config import ConfigError, ExperimentConfig, from_dict
from .distributed import World, op_generator
from .policies import POLICIES, build_policy, q_movement
from .sites import DAContext, Site, current_context, hook_sites

if TYPE_CHECKING:
    from .adalase import Hypergradient
    from .arms import Arm
    from .distributed import Draws
    from .ops import Op

STREAMS = ("data", "site", "op", "pseudo_val")  # a run's generators, seeded from one seed

# ``loss_fn(output, soft_targets)``: a loss against soft (mixed) targets
SoftLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# a pseudo-validation source a user passes: a map-style Dataset, (x, y) tensors or a DataLoader
ValSource = Union[Dataset[Any], tuple[torch.Tensor, torch.Tensor], DataLoader[Any]]
_T = TypeVar("_T")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft (mixed) targets, averaged over the batch."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()


def mixed_loss(
    output: torch.Tensor, y: torch.Tensor, loss_fn: SoftLoss = soft_cross_entropy, ctx: Optional[DAContext] = None
) -> torch.Tensor:
    """``loss_fn(output, targets)`` with the one-hot targets of ``y`` mixed as the current DA
    context (or ``ctx``) mixed the features: what a LightningModule's ``training_step`` calls."""
    ctx = ctx if ctx is not None else current_context()
    targets = F.one_hot(y, output.shape[1]).float()
    return loss_fn(output, targets if ctx is None else ctx.mix_targets(targets))


def generators(seed: int, device: Union[torch.device, str]) -> tuple[dict[str, np.random.Generator], torch.Generator]:
    """The run's numpy generators (:data:`STREAMS`) and its torch generator, from one seed."""
    seeds = np.random.SeedSequence(seed).spawn(len(STREAMS) + 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seeds[-1].generate_state(1)[0]))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, seeds)}, gen


def q_metrics(q: Union[np.ndarray, Sequence[float]], arm_names: Sequence[str], skipped: int) -> dict:
    """AdaLASE's per-epoch metrics: ``adalase/q/<arm>``, in a joint setting its marginals per
    site and per op, how far q is from uniform, and the non-finite hypergradients skipped."""
    metrics = {keys.q(a): float(p) for a, p in zip(arm_names, q)}
    for kind, values in marginals(q, list(arm_names)).items():
        metrics.update({keys.q_marginal(kind, k): p for k, p in values.items()})
    move = q_movement(q)
    return {**metrics, keys.Q_MAX_DEV: move["max_dev"], keys.Q_KL: move["kl"], keys.SKIPPED: skipped}


class CostMeter:
    """Device-synchronised wall time per phase, and per-sample forward+backward passes.

    Phases nest: time spent in an inner phase (``adalase`` inside ``train``) is not counted again
    in the outer one.
    """

    PHASES = ("train_s", "eval_s", "adalase_s")

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.sample_passes = 0
        self._inner: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, phase: str) -> _Phase:
        """A context that adds its wall time to ``phase`` (a small class, not a generator: it
        wraps AdaLASE's work at every step)."""
        return _Phase(self, phase)

    def totals(self) -> dict:
        return {**self.seconds, "sample_passes": self.sample_passes}

    def metrics(self) -> dict:
        s = self.seconds
        return {
            keys.COST_TRAIN_S: s["train_s"],
            keys.COST_EVAL_S: s["eval_s"],
            keys.COST_ADALASE_S: s["adalase_s"],
            keys.COST_DEVICE_S: sum(s.values()),
            keys.COST_SAMPLE_PASSES: self.sample_passes,
        }

    def state_dict(self) -> dict:
        return self.totals()

    def load_state_dict(self, state: dict) -> None:
        self.seconds = {k: float(state[k]) for k in self.PHASES}
        self.sample_passes = int(state["sample_passes"])


class _Phase:
    def __init__(self, meter: CostMeter, phase: str):
        self.meter, self.phase = meter, phase

    def __enter__(self) -> None:
        self.meter._sync()
        self.start = time.perf_counter()
        self.meter._inner.append(0.0)

    def __exit__(self, *exc: object) -> None:
        m = self.meter
        m._sync()
        spent = time.perf_counter() - self.start
        m.seconds[self.phase] += spent - m._inner.pop()
        if m._inner:
            m._inner[-1] += spent


class DatasetPool:
    """A torch ``Dataset`` (or ``(x, y)`` tensors) as a pseudo-validation pool: batches by index."""

    def __init__(self, data: Union[Dataset[Any], tuple[torch.Tensor, torch.Tensor]]):
        self.data = data
        # a map-style Dataset has a len (torch's Dataset does not declare one)
        self.ids = np.arange(len(data[0]) if isinstance(data, tuple) else len(cast(Sized, data)))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.data, tuple):
            t = torch.as_tensor(np.asarray(idx))
            return self.data[0][t], self.data[1][t]
        x, y = torch.utils.data.default_collate([self.data[int(i)] for i in idx])[:2]
        return x, torch.as_tensor(y)


def _site_names(model: nn.Module, sites: Optional[Sequence[str]], input_site: bool) -> list[str]:
    """The model's sites: its :class:`Site` modules (in order), or hooks at the named submodules."""
    if sites is not None:
        return hook_sites(model, list(sites), include_input=input_site)
    published = model.__dict__.get("da_sites")
    if published is not None:
        return [s.name for s in published]
    if model.__dict__.get("_da_hooks") is not None:  # hooked by an earlier AdaLASE over this model
        return list(model.__dict__["_da_hooks"])
    found = sorted((m for m in model.modules() if isinstance(m, Site)), key=lambda m: m.index)
    if not found:
        raise ConfigError(
            f"sites = None, but {type(model).__name__} has no Site modules; name the submodules whose "
            "outputs AdaLASE may augment, e.g. sites=['layer1', 'layer2']"
        )
    return [m.name for m in found]


def _user_config(
    selection: str, op: Union[str, Sequence[str]], preset: str, settings: Optional[dict]
) -> ExperimentConfig:
    tree: dict[str, Any] = {
        "selection": {"method": selection},
        "augment": {"op": op} if isinstance(op, str) else {"ops": list(op)},
        "adalase": {"preset": preset},
    }
    for key, value in (settings or {}).items():
        section, _, name = key.partition(".")
        if section not in ("adalase", "augment", "selection") or not name:
            raise ConfigError(
                f"settings key {key!r}: AdaLASE takes adalase.*, augment.* and selection.* keys "
                "(e.g. 'adalase.eta'); the loop, data and model are yours"
            )
        tree[section][name] = value
    return from_dict(tree)


class AdaLASE:
    """Latent data augmentation at a learned site, for any model, optimizer and loop.

    - ``sites``: names of submodules whose outputs may be augmented (the input is a site too,
      unless ``input_site=False``), or None for a model built with :class:`Site` modules.
    - ``op``: an op name (``mixup``, ``cutmix``, ``cutout``, ``noise``, ``translate``), or a list
      of names: then AdaLASE learns (site, op) pairs.
    - ``val``: the pseudo-validation source, never trained on: a ``Dataset``, ``(x, y)`` tensors
      or a ``DataLoader`` (each epoch its next batch); :func:`hold_out` makes one from your data.
    - ``epochs`` and ``steps_per_epoch``: the run's length (the update spreads its budget over
      it, and a new pseudo-validation batch is drawn every epoch).
    - ``preset`` (``fast``, ``normalized``, ``faithful``) and ``settings`` (``{"adalase.eta": 5}``):
      as the config's ``adalase`` section; ``selection`` runs a static rule instead (``uniform``,
      ``fixed`` with ``settings={"selection.site": "layer1"}``, ``probs``, ``none``).
    - ``loss_fn(output, soft_targets)``: default cross-entropy against soft targets.
    - ``direction``: ``step`` differentiates the optimizer's actual step (SGD with momentum,
      Nesterov and weight decay, Adam, AdamW); ``gradient`` takes the raw gradient (any optimizer).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        *,
        epochs: int,
        steps_per_epoch: int,
        val: Optional[ValSource] = None,
        sites: Optional[Sequence[str]] = None,
        op: Union[str, Sequence[str]] = "mixup",
        preset: str = "fast",
        selection: str = "adalase",
        settings: Optional[dict] = None,
        seed: int = 0,
        loss_fn: SoftLoss = soft_cross_entropy,
        direction: str = "step",
        input_site: bool = True,
    ):
        if epochs < 1 or steps_per_epoch < 1:
            raise ConfigError(f"epochs = {epochs}, steps_per_epoch = {steps_per_epoch}: both must be at least 1")
        cfg = _user_config(selection, op, preset, settings)
        names = _site_names(model, sites, input_site)
        arms = build_arms(names, variant_labels(cfg.augment))
        device = next(model.parameters()).device
        rngs, gen = generators(seed, device)
        learns = POLICIES.get(cfg.selection.method).learns
        if learns and val is None:
            raise ConfigError(
                "val = None: AdaLASE needs pseudo-validation data it does not train on; pass a Dataset, "
                "(x, y) tensors or a DataLoader (adalase_tune.hold_out splits one off your training set)"
            )
        self._val = None if val is None else (val if isinstance(val, torch.utils.data.DataLoader) else DatasetPool(val))
        self._setup(
            cfg, model, optimizer, arms, build_ops(cfg.augment), steps_per_epoch, epochs, None, rngs, gen,
            direction=direction,
        )  # fmt: skip
        self.loss_fn = loss_fn

    @classmethod
    def from_config(
        cls,
        cfg: ExperimentConfig,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        arms: Sequence[Arm],
        ops: Sequence[Op],
        steps_per_epoch: int,
        **parts: Any,
    ) -> AdaLASE:
        """The built-in Trainer's object: ``parts`` are ``pseudo_val``, ``rngs``, ``torch_gen``,
        ``world``, ``meter``, ``amp`` and ``memory_format``."""
        self = cls.__new__(cls)
        self._val, self.loss_fn = None, soft_cross_entropy
        self._setup(
            cfg, model, optimizer, arms, ops, steps_per_epoch, cfg.train.epochs,
            parts["pseudo_val"], parts["rngs"], parts["torch_gen"], parts.get("world"), parts.get("meter"),
            parts.get("amp", False), parts.get("memory_format"),
        )  # fmt: skip
        return self

    def _setup(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        arms: Sequence[Arm],
        ops: Sequence[Op],
        steps_per_epoch: int,
        epochs: int,
        pseudo_val: Optional[PseudoValidation],
        rngs: dict[str, np.random.Generator],
        gen: torch.Generator,
        world: Optional[World] = None,
        meter: Optional[CostMeter] = None,
        amp: bool = False,
        memory_format: Optional[torch.memory_format] = None,
        direction: str = "step",
    ) -> None:
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.arms, self.ops = list(arms), list(ops)
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.rngs, self.torch_gen = rngs, gen
        self.world = world or World()
        device = next(model.parameters()).device
        self.meter = meter or CostMeter(device)
        self.amp, self.memory_format = amp, memory_format
        self.policy = build_policy(cfg, self.arms)
        self.pseudo_val: Optional[PseudoValidation] = pseudo_val if self.policy.learns else None
        self.hypergradient: Optional[Hypergradient] = None
        if self.policy.learns:
            from .adalase import Hypergradient

            self.hypergradient = Hypergradient(cfg, StepDirection(optimizer, trainable(model), direction))
            self.policy.start(self.hypergradient.updates(epochs * steps_per_epoch))
        self.steps = 0
        self.arm: Optional[int] = None
        self.train_passes = self.val_passes = 0
        self.q_history: list[list[float]] = []
        self._open: Optional[DAContext] = None

    # --- per batch ----------------------------------------------------------------------------

    @property
    def q(self) -> Optional[np.ndarray]:
        """The current categorical over :attr:`arm_names` (None for ``selection="none"``)."""
        return self.policy.probs()

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def context(self, batch: int, rng: Optional[Draws] = None) -> DAContext:
        """Sample this step's arm and return its DA context (enter it around the forward pass).
        ``batch``: the global batch size (counted in the cost); ``rng``: the op's generator."""
        if self.steps % self.steps_per_epoch == 0 and self.policy.learns:
            self._pseudo_val(batch).new_epoch(self.rngs["pseudo_val"])
        self.arm = arm = self.policy.sample(self.rngs["site"])
        self.train_passes += batch
        self.meter.sample_passes += batch
        site, op = (None, None) if arm is None else (self.arms[arm].site, self.ops[self.arms[arm].variant])
        if rng is None:
            rng = op_generator(self.rngs["op"], self.world, batch)
        return DAContext(site, op, rng, self.torch_gen)

    def loss(self, x: torch.Tensor, y: torch.Tensor, *, batch: Optional[int] = None) -> torch.Tensor:
        """The training loss of one batch, with the op at this step's sampled site (targets mixed
        alike). ``batch``: the global batch size in a data-parallel run (default ``len(y)``)."""
        ctx = self.context(len(y) if batch is None else batch)
        return self.forward_loss(x, y, ctx)

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor, ctx: Optional[DAContext] = None) -> torch.Tensor:
        """``loss_fn`` of the model on ``(x, y)`` under ``ctx`` (no latent DA when None)."""
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with autocast, ctx if ctx is not None else contextlib.nullcontext():
            out = self.model(x)
        return mixed_loss(out, y, self.loss_fn, ctx or DAContext(None))

    def after_backward(self) -> None:
        """After backward, before the optimizer's step: keep what the hypergradient needs."""
        if self.hypergradient is not None:
            with self.meter.measure("adalase_s"):
                self.hypergradient.collect(self.steps, self.arm)

    def after_step(self) -> None:
        """After the optimizer's step: the pseudo-validation gradient when one is due, the
        hypergradients fed to the policy, and the step counted."""
        hyper = self.hypergradient
        if hyper is not None and hyper.window:
            with self.meter.measure("adalase_s"):
                g_val = None
                if hyper.fresh_due(self.steps, (self.steps + 1) % self.steps_per_epoch == 0):
                    pv = self._pseudo_val(0)
                    g_val = pv.gradient(self.model, lambda m, x, y: self.forward_loss(x, y))
                    self.val_passes += pv.sample_passes
                    self.meter.sample_passes += pv.sample_passes
                hyper.feed(g_val, self.policy)
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0 and self.q is not None:
            self.q_history.append([float(v) for v in self.q])

    def step(self) -> None:
        """``optimizer.step()`` with AdaLASE's work around it (call it instead)."""
        assert self.optimizer is not None, "step() needs the optimizer; or call after_backward/after_step"
        self.after_backward()
        self.optimizer.step()
        self.after_step()

    def _pseudo_val(self, batch: int) -> PseudoValidation:
        if self.pseudo_val is None:  # a user's source: the preset's multiple of the first batch
            assert self._val is not None, "a learning policy has a pseudo-validation source"
            if isinstance(self._val, torch.utils.data.DataLoader):
                self.pseudo_val = PseudoValidation(LoaderPool(self._val), self._val.batch_size or 1, world=self.world)
            else:
                size = self.cfg.adalase.val_batch(max(batch, 1))
                self.pseudo_val = PseudoValidation(self._val, size, world=self.world)
        return self.pseudo_val

    # --- cost and state -----------------------------------------------------------------------

    @property
    def cost(self) -> dict:
        """Per-sample passes (training, pseudo-validation) and seconds AdaLASE spent, so far."""
        plain = max(self.train_passes, 1)
        return {
            "steps": self.steps,
            "train_passes": self.train_passes,
            "pseudo_val_passes": self.val_passes,
            "plain_run_multiple": (self.train_passes + self.val_passes) / plain,
            "adalase_s": self.meter.seconds["adalase_s"],
            "skipped": self.policy.skipped,
        }

    def state_dict(self) -> dict:
        """The policy (q and the update's state), the schedule, the generators and the counters."""
        return {
            "policy": self.policy.state_dict(),
            "hypergradient": None if self.hypergradient is None else self.hypergradient.state_dict(),
            "steps": self.steps,
            "passes": [self.train_passes, self.val_passes],
            "q_history": self.q_history,
            "rngs": {k: r.bit_generator.state for k, r in self.rngs.items()},
            "torch_gen": self.torch_gen.get_state(),
            "pseudo_val_batch": self._val_batch(),
        }

    def _val_batch(self) -> Optional[tuple]:
        """This epoch's pseudo-validation batch (a resume within an epoch takes the same one)."""
        pv = self.pseudo_val
        if pv is None or pv.x is None or pv.y is None:
            return None
        return pv.x.cpu(), pv.y.cpu(), np.asarray(pv.ids).tolist()

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.hypergradient is not None and state.get("hypergradient"):
            self.hypergradient.load_state_dict(state["hypergradient"], next(self.model.parameters()).device)
        self.steps = int(state["steps"])
        self.train_passes, self.val_passes = (int(v) for v in state["passes"])
        self.q_history = [list(q) for q in state["q_history"]]
        for k, r in self.rngs.items():
            r.bit_generator.state = state["rngs"][k]
        self.torch_gen.set_state(state["torch_gen"])
        batch = state.get("pseudo_val_batch")
        if batch is not None:
            pv = self._pseudo_val(len(batch[1]))
            device = next(self.model.parameters()).device
            pv.x, pv.y, pv.ids = batch[0].to(device), batch[1].to(device), np.asarray(batch[2])
            pv.batch_size = len(batch[1])


class LoaderPool:
    """A ``DataLoader`` as a pseudo-validation source: each epoch takes its next batch (cycling)."""

    def __init__(self, loader: DataLoader[Any]):
        self.loader: DataLoader[Any] = loader
        self._it: Optional[Iterator[Any]] = None
        self.ids = np.arange(len(self))  # a loader's batch has no source indices

    def __len__(self) -> int:
        return self.loader.batch_size or 1

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            batch = next(self._it)
        return batch[0], batch[1]


def hold_out(dataset: Dataset[_T], fraction: float = 0.2, seed: int = 0) -> tuple[Subset[_T], Subset[_T]]:
    """Split a ``Dataset`` into ``(train, val)`` subsets, ``val`` a random ``fraction`` of it:
    the pseudo-validation source AdaLASE must not train on."""
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction = {fraction}: hold out a share strictly between 0 and 1 (e.g. 0.2)")
    n = len(cast(Sized, dataset))  # a map-style Dataset has a len (torch's Dataset does not declare one)
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(fraction * n))
    if cut == 0 or cut == n:
        raise ConfigError(f"fraction = {fraction} of {n} samples leaves a part empty; use more data or another share")
    sub = torch.utils.data.Subset
    return sub(dataset, order[cut:].tolist()), sub(dataset, order[:cut].tolist())
