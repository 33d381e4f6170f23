"""The training engine: plain PyTorch, no Ray or MLflow.

:class:`Trainer` trains one network with latent DA under one selection policy, evaluates on
val and test every epoch and accounts for cost. What happens around the loop (progress output,
a checkpoint folder, a Ray Tune report, MLflow tracking) plugs in as :class:`Callback` s, so the
same loop runs standalone and under Ray Tune. Every random draw comes from generators the run
owns; their states are in the checkpoint, so a run resumed after epoch k replays an
uninterrupted one exactly on CPU.

Example::

    summary = Trainer(load_config("search_spaces/digits.yaml"), callbacks=[ProgressBar()]).run()
    summary["test_acc_at_best_val"]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import keys
from .adalase import PseudoValidation, hold_out
from .arms import build_arms, build_ops, marginals, variant_labels
from .config import ConfigError, ExperimentConfig, TrainConfig, describe_differences, differing_keys, shown
from .data import DataBundle, augment_inputs, build_data
from .distributed import World
from .loop import AdaLASE, CostMeter, generators, q_metrics, soft_cross_entropy
from .models import build_model
from .policies import POLICIES, q_movement
from .sites import DAContext, sites_of

if TYPE_CHECKING:
    from pathlib import Path

    from .adalase import Hypergradient
    from .arms import Arm
    from .data import Split
    from .data._stream import StreamSplit
    from .distributed import Draws
    from .policies import Policy

STATE_FORMAT = "adalase_tune.trainer/1"
__all__ = ["Callback", "CostMeter", "History", "NonFiniteError", "Trainer", "soft_cross_entropy", "train"]


class NonFiniteError(RuntimeError):
    """A loss, a weight or an evaluation metric became NaN or infinite: the run cannot continue.
    Retrying from a checkpoint would fail the same way, so Tune trials fail at once."""


NonFiniteLossError = NonFiniteError  # the name of earlier versions


class Callback:
    """Hooks into :meth:`Trainer.run` (in the spirit of Lightning's ``Callback``); each is a no-op.

    Example, a callback that stops nothing but prints the validation accuracy::

        class Printer(Callback):
            def on_epoch_end(self, trainer, metrics):
                print(metrics["epoch"], metrics["val/acc"])
    """

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this call to :meth:`Trainer.run` (also after a resume)."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        """After an epoch's evaluation; :meth:`Trainer.state_dict` then holds that epoch."""

    def on_train_end(self, trainer: Trainer, summary: dict) -> None:
        """After the last epoch, with :meth:`Trainer.summary`."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """The run stopped with ``error`` (KeyboardInterrupt included); it is re-raised after."""

    def state_dict(self) -> dict:
        """State saved in the trainer's checkpoint (under the class name); empty: nothing saved."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned, when a checkpoint is loaded."""


class History:
    """Every epoch's metrics, and the selection rule: the *first* epoch with the best val accuracy
    (test accuracy is reported there, never selected on)."""

    def __init__(self, epochs: Sequence[dict] = ()):
        self.epochs = list(epochs)

    def append(self, metrics: dict) -> None:
        self.epochs.append(metrics)

    def best(self) -> Optional[dict]:
        """With ``adalase.retrain``, among the epochs of the current phase only (the retrain's,
        once it began: the probe's network is not the one the run delivers)."""
        if not self.epochs:
            return None
        phase = self.epochs[-1].get("phase")
        ids = [i for i, m in enumerate(self.epochs) if m.get("phase") == phase]
        return self.epochs[max(ids, key=lambda i: (self.epochs[i][keys.VAL_ACC], -i))]

    def __len__(self) -> int:
        return len(self.epochs)


def pick_device(name: str) -> torch.device:
    """The one place where the device is chosen: ``auto`` prefers CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device = {shown(name)}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}, but no CUDA device is visible here; use auto or cpu")
    return device


def _optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer``: SGD (momentum, Nesterov) or Adam / AdamW, with ``train.weight_decay``."""
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)


def _cosine(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


class Trainer:
    """Everything one run owns: data, model, optimiser, schedule, policy, op, generators, costs.

    ``callbacks`` see every epoch (see :class:`Callback`). Every check of the config against the
    data and the model happens here, before any training step. ``world``: this worker's place in
    a data-parallel run (:mod:`adalase_tune.distributed`); by default a world of one.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: Optional[DataBundle] = None,
        callbacks: Sequence[Callback] = (),
        world: Optional[World] = None,
        device: Optional[torch.device] = None,
    ):
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.world = world or World()
        self.device = device or pick_device(cfg.train.device)
        torch.set_num_threads(cfg.train.threads)  # the same in train, in a trial, in each worker (one result)
        data = (data if data is not None else build_data(cfg.data)).for_seed(cfg.subset_seed())
        model = self._fresh_model(data)
        self.sites = sites_of(model)
        self.ops = build_ops(cfg.augment)
        self.arms = build_arms([s.name for s in self.sites], variant_labels(cfg.augment))
        # search, then retrain (adalase.retrain): the probe's epochs come first
        self.probe_epochs = cfg.adalase.probe_epochs(cfg.train.epochs) if cfg.selection.method == "adalase" else 0
        self.total_epochs = self.probe_epochs + cfg.train.epochs
        cuda = self.device.type == "cuda"
        self.amp = cfg.train.uses("amp", cuda)  # bf16 autocast
        image = len(data.input_shape) == 3
        self.memory_format = torch.channels_last if image and cfg.train.uses("channels_last", cuda) else None
        self.all_data = data.to(self.device)
        self.probe: Optional[dict] = None  # the probe's q, cost and skipped count, once the retrain began
        self.q_retrain: Optional[list[float]] = None  # the retrain's fixed q (adalase.retrain_q of the probe's)
        self.epoch = 0
        self.step = 0
        self.restored_after = 0  # the epoch of the checkpoint this run was restored from (0: none)
        self.history = History()
        self.meter = CostMeter(self.device)
        self.world.check_batches(len(self.all_data.train), cfg.train.batch_size)  # the retrain's batches too
        probe = cfg.replace(**{"train.epochs": self.probe_epochs}) if self.probe_epochs else cfg
        self._begin(probe, model)

    def _fresh_model(self, data: DataBundle) -> torch.nn.Module:
        """The run's network at its initialisation (the same for every phase of one seed)."""
        torch.manual_seed(self.cfg.train.seed)
        return build_model(self.cfg.model, data.input_shape, data.num_classes)

    def _begin(self, cfg: ExperimentConfig, model: torch.nn.Module) -> None:
        """Set up a phase of ``cfg.train.epochs`` epochs: the data it trains on, the optimiser and
        schedule, fresh generators, and the :class:`~adalase_tune.loop.AdaLASE` object that runs
        the policy (for AdaLASE, with its pseudo-validation)."""
        learns = POLICIES.get(cfg.selection.method).learns
        data, pool = hold_out(cfg, self.all_data) if learns else (self.all_data, None)
        self.model = model.to(self.device)
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.data = data
        t = cfg.train
        self.steps_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        self.world.check_batches(len(self.data.train), t.batch_size)
        self.optimizer = _optimizer(self.model, t)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _cosine(t.epochs * self.steps_per_epoch))
        self.rngs, self.torch_gen = generators(t.seed, self.device)
        pseudo_val = PseudoValidation.from_config(cfg, self.data, pool, self.world) if learns else None
        self.ada = AdaLASE.from_config(
            cfg, self.model, self.optimizer, self.arms, self.ops, self.steps_per_epoch,
            pseudo_val=pseudo_val, rngs=self.rngs, torch_gen=self.torch_gen, world=self.world,
            meter=self.meter, amp=self.amp, memory_format=self.memory_format,
        )  # fmt: skip

    @property
    def policy(self) -> Policy:
        """The selection policy (:mod:`adalase_tune.policies`) of the current phase."""
        return self.ada.policy

    @property
    def pseudo_val(self) -> Optional[PseudoValidation]:
        return self.ada.pseudo_val

    @property
    def hypergradient(self) -> Optional[Hypergradient]:
        return self.ada.hypergradient

    def _begin_retrain(self, probe: dict) -> None:
        """The second phase of ``adalase.retrain``: the network back at its initialisation, trained
        on all training samples with q fixed at ``adalase.retrain_q`` of the probe's final
        ``probe["q"]`` (exactly a ``probs`` run with these weights)."""
        self.probe = probe
        self.q_retrain = self.cfg.adalase.retrain_q(probe["q"])
        cfg = self.cfg.replace(**{"selection.method": "probs", "selection.weights": self.q_retrain})
        self._begin(cfg, self._fresh_model(self.all_data))

    @property
    def phase(self) -> int:
        """0: a plain run; with ``adalase.retrain``, 1 in the probe and 2 in the retrain."""
        return 0 if not self.probe_epochs else 2 if self.probe is not None else 1

    # --- one step, one epoch --------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        arm: Optional[int] = None,
        rng: Optional[Draws] = None,
    ) -> torch.Tensor:
        """The loss with latent DA at ``arm`` (an arm index: a site, or a (site, op) pair), or none."""
        assert model is self.model, "the run's own model"
        site, op = (None, None) if arm is None else (self.arms[arm].site, self.ops[self.arms[arm].variant])
        return self.ada.forward_loss(x, y, DAContext(site, op, self.rngs["op"] if rng is None else rng, self.torch_gen))

    def _train_epoch(self) -> float:
        self.model.train()
        order = self.rngs["data"].permutation(len(self.data.train))
        total, count = torch.zeros((), device=self.device), 0
        ada, world = self.ada, self.world
        params = [p for p in self.model.parameters() if p.requires_grad] if world.parallel else []
        train = self.data.train
        # streaming: the loader's workers augment, seeded per sample from one draw per epoch
        seed = int(self.rngs["data"].integers(2**62)) if train.streams and self.data.input_augment else None
        for x, y in train.batches(order, self.cfg.train.batch_size, augment_seed=seed):
            if self.data.input_augment and not train.streams:
                x = augment_inputs(x, self.rngs["data"])  # on the global batch: every worker alike
            self.optimizer.zero_grad(set_to_none=True)
            n = len(y)
            if world.parallel:
                shard = world.shard(n)
                x, y = x[shard], y[shard]
            loss = ada.loss(x, y, batch=n)  # global passes: every worker counts the whole batch
            loss.backward()
            world.average_gradients(params, len(y), n)
            ada.step()
            self.scheduler.step()
            self.step += 1
            total += loss.detach() * len(y)
            count += len(y)
        if world.parallel:
            summed, counted = world.sum([total.item(), count], self.device)
            return summed / counted
        return (total / count).item()

    @torch.no_grad()
    def evaluate(self, split: Union[Split, StreamSplit], batch_size: Optional[int] = None) -> tuple[float, float]:
        """(mean loss, accuracy) on a split, in eval mode, without latent DA (each worker its shard)."""
        self.model.eval()
        batch_size = batch_size or (self.cfg.train.batch_size if split.streams else 1024)
        loss, correct = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for x, y in split.batches(np.arange(len(split))[self.world.shard(len(split))], batch_size):
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            with self._autocast():
                logits = self.model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        if self.world.parallel:
            loss_sum, right = self.world.sum([loss.item(), correct.item()], self.device)
            return loss_sum / len(split), right / len(split)
        return (loss / len(split)).item(), (correct / len(split)).item()

    def _check_finite(self, metrics: dict) -> None:
        """Fail with the reason when a loss, an evaluation metric or a weight is not finite."""
        bad = [k for k in keys.LOSSES if not math.isfinite(metrics[k])]
        if not bad and not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            bad = ["the model's weights"]
        if bad:
            raise NonFiniteError(
                f"{', '.join(bad)} not finite in epoch {metrics['epoch']} "
                f"(train/loss = {metrics['train/loss']}): training diverged; lower train.lr "
                f"(now {self.cfg.train.lr}) or train.weight_decay (now {self.cfg.train.weight_decay})"
            )

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train the remaining epochs, calling the callbacks; returns :meth:`summary`."""
        try:
            for cb in self.callbacks:
                cb.on_train_start(self)
            while self.epoch < self.total_epochs:
                metrics = self.run_epoch()
                for cb in self.callbacks:
                    cb.on_epoch_end(self, metrics)
        except BaseException as err:
            for cb in self.callbacks:
                cb.on_exception(self, err)
            raise
        summary = self.summary()
        for cb in self.callbacks:
            cb.on_train_end(self, summary)
        return summary

    def run_epoch(self) -> dict:
        """Train one epoch, evaluate on val and test; returns the epoch's metrics."""
        with self.meter.measure("train_s"):
            train_loss = self._train_epoch()
        with self.meter.measure("eval_s"):
            self.world.broadcast_buffers(self.model)  # BatchNorm running statistics of worker 0
            val_loss, val_acc = self.evaluate(self.data.val)
            test_loss, test_acc = self.evaluate(self.data.test)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            keys.TRAIN_LOSS: train_loss,
            keys.VAL_LOSS: val_loss,
            keys.VAL_ACC: val_acc,
            keys.TEST_LOSS: test_loss,
            keys.TEST_ACC: test_acc,
            "lr": self.scheduler.get_last_lr()[0],
        }
        self._check_finite(metrics)
        q = self.policy.probs() if self.probe is None else np.array(self.q_retrain)  # the retrain: its fixed q
        if self.cfg.selection.method == "adalase" and q is not None:
            metrics.update(q_metrics(q, self.ada.arm_names, self.skipped()))
        metrics.update(self._cost_metrics())
        if self.phase:
            metrics["phase"] = self.phase
        self.history.append(dict(metrics))
        if self.phase == 1 and self.epoch == self.probe_epochs:
            assert q is not None, "AdaLASE has a q"
            probe = {"q": [float(v) for v in q], "cost": self.meter.totals(), "skipped": self.policy.skipped}
            self._begin_retrain(probe)
        return self.epoch_metrics()

    def skipped(self) -> int:
        """AdaLASE's non-finite hypergradients skipped so far (the probe's, in the retrain)."""
        return self.probe["skipped"] if self.probe is not None else self.policy.skipped

    def _cost_metrics(self) -> dict:
        """The meter's metrics; with several workers the seconds are summed over them."""
        m = self.meter.metrics()
        if self.world.parallel:
            parts = [keys.COST_TRAIN_S, keys.COST_EVAL_S, keys.COST_ADALASE_S]
            for k, v in zip(parts, self.world.sum([m[k] for k in parts], self.device)):
                m[k] = v
            m[keys.COST_DEVICE_S] = sum(m[k] for k in parts)
        return m

    def epoch_metrics(self) -> dict:
        """The last epoch's metrics with the running best (so that every report carries the
        selection on val): what :meth:`run_epoch` returns, also after a restore."""
        best = self.history.best()
        assert best is not None, "at least one epoch has run"
        return {
            **self.history.epochs[-1],
            "best_val_acc": best[keys.VAL_ACC],
            "test_acc_at_best_val": best[keys.TEST_ACC],
            "best_epoch": best["epoch"],
        }

    def summary(self) -> dict:
        """The run's summary: selection on val, test accuracy at the selected epoch, q, costs."""
        h = self.history.epochs
        best = self.history.best()
        learned = [m for m in h if keys.q(self.arms[0].name) in m and m.get("phase") != 2]  # not the retrain
        q_history = [[m[keys.q(a.name)] for a in self.arms] for m in learned] or None
        return {
            "config": self.cfg.to_dict(),
            "sites": [s.name for s in self.sites],
            "arms": [a.name for a in self.arms],  # what q_history and q_final are over
            "ops": variant_labels(self.cfg.augment),
            "site_shapes": [list(s.shape) for s in self.sites],
            "epochs": self.epoch,
            "best_epoch": None if best is None else best["epoch"],
            "best_val_acc": None if best is None else best[keys.VAL_ACC],
            "test_acc_at_best_val": None if best is None else best[keys.TEST_ACC],
            "final_test_acc": h[-1][keys.TEST_ACC] if h else None,
            "q_final": q_history[-1] if q_history else None,
            "q_marginals": marginals(q_history[-1], [a.name for a in self.arms]) if q_history else None,
            "q_history": q_history,
            "q_movement": q_movement(q_history[-1]) if q_history else None,
            "adalase_skipped": self.skipped() if self.cfg.selection.method == "adalase" else None,
            "probe": self.probe,  # adalase.retrain: the probe's q and its cost (included in "cost")
            "q_retrain": self.q_retrain,  # the q the retrain ran with (adalase.sharpen applied)
            "splits": self.split_sizes(),
            "history": h,
            "cost": {**self.meter.totals(), "device": str(self.device)},
        }

    def split_sizes(self) -> dict:
        """Samples per split: train (what is trained on), val, test and the pseudo-validation pool."""
        sizes = {"train": len(self.data.train), "val": len(self.data.val), "test": len(self.data.test)}
        if self.pseudo_val is not None:
            sizes["pseudo_val_pool"] = len(self.pseudo_val.split)
            sizes["pseudo_val_batch"] = self.pseudo_val.batch_size
        return sizes

    # --- state --------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed for an exact resume; tensors and plain data only (weights_only loads)."""
        return {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "policy": self.policy.state_dict(),
            "hypergradient": self.hypergradient.state_dict() if self.hypergradient is not None else None,
            "adalase": {"steps": self.ada.steps, "passes": [self.ada.train_passes, self.ada.val_passes]},
            "rngs": {k: r.bit_generator.state for k, r in self.rngs.items()},
            "torch_gen": self.torch_gen.get_state(),
            "history": self.history.epochs,
            "cost": self.meter.state_dict(),
            "probe": self.probe,
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks if cb.state_dict()},
        }

    def load_state_dict(
        self, state: dict, source: str = "checkpoint", may_differ: Callable[[str], bool] = lambda key: False
    ) -> None:
        """Restore a run. The checkpoint's config must equal this run's, except in keys for which
        ``may_differ(key)`` holds: PBT's exploit loads another trial's weights into a trial whose
        searched keys differ (the Tune layer hands in that rule). The policy's own state is
        restored only when nothing differs."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{source}: not an adalase_tune trainer checkpoint")
        diff = differing_keys(state["config"], self.cfg.to_dict())
        if any(not may_differ(k) for k in diff):
            what = describe_differences(state["config"], self.cfg.to_dict(), [k for k in diff if not may_differ(k)])
            raise ConfigError(
                f"{source} was written with another config ({what}); "
                "resume with the same config and --set flags, or start a new run"
            )
        self.epoch, self.step = state["epoch"], state["step"]
        self.restored_after = self.epoch
        if state.get("probe") is not None and self.probe is None:  # saved in the retrain phase
            self._begin_retrain(state["probe"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        counts = state.get("adalase", {"steps": self.step, "passes": [0, 0]})
        self.ada.steps = counts["steps"]
        self.ada.train_passes, self.ada.val_passes = counts["passes"]
        if not diff:
            self.policy.load_state_dict(state["policy"])
            if self.hypergradient is not None and state.get("hypergradient"):
                self.hypergradient.load_state_dict(state["hypergradient"], self.device)
        for k, r in self.rngs.items():
            r.bit_generator.state = state["rngs"][k]
        self.torch_gen.set_state(state["torch_gen"])
        self.history = History(state["history"])
        self.meter.load_state_dict(state["cost"])
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if type(cb).__name__ in saved:
                cb.load_state_dict(saved[type(cb).__name__])


class ProgressBar(Callback):
    """A tqdm bar over epochs and one line per epoch (loss, accuracies, time, q)."""

    def on_train_start(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.total_epochs,
            initial=trainer.epoch,
            desc="epochs",
            unit="ep",
            dynamic_ncols=True,
            leave=False,
        )

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        import sys

        self.bar.update(1)
        self.bar.write(epoch_line(metrics, trainer.total_epochs, trainer.arms), file=sys.stderr)

    def on_train_end(self, trainer: Trainer, summary: dict) -> None:
        self.bar.close()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        if hasattr(self, "bar"):
            self.bar.close()


class CheckpointDir(Callback):
    """Writes ``DIR/last.pt`` (atomically) after every epoch; ``resume`` restores it first."""

    def __init__(self, folder: str | Path, resume: bool = False):
        from pathlib import Path

        self.path = Path(folder) / "last.pt"
        self.resume = resume

    def restore(self, trainer: Trainer) -> bool:
        """Load ``last.pt`` into ``trainer`` when resuming and it exists; True when it did."""
        from .checkpoint import safe_load

        if not (self.resume and self.path.is_file()):
            return False
        trainer.load_state_dict(safe_load(self.path), source=str(self.path))
        return True

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        from .checkpoint import atomic_save

        atomic_save(trainer.state_dict(), self.path)


def epoch_line(m: dict, epochs: int, arms: Sequence[Arm]) -> str:
    """One epoch in one line; AdaLASE's q per arm, or in a joint setting its two marginals."""
    phase = {1: "probe ", 2: "retrain "}.get(m.get("phase", 0), "")
    line = (
        f"{phase}epoch {m['epoch']:>3}/{epochs}  train/loss {m[keys.TRAIN_LOSS]:.4f}  val/acc {m[keys.VAL_ACC]:.4f}"
        f"  test/acc {m[keys.TEST_ACC]:.4f}  {m[keys.COST_DEVICE_S]:.1f}s"
    )
    if keys.q(arms[0].name) in m:
        joint = marginals([m[keys.q(a.name)] for a in arms], [a.name for a in arms])
        if joint:
            for kind, values in joint.items():
                line += f"  q_{kind} " + " ".join(f"{k}={p:.3f}" for k, p in values.items())
        else:
            line += "  q " + " ".join(f"{a.name}={m[keys.q(a.name)]:.3f}" for a in arms)
    return line


def train(cfg: ExperimentConfig, callbacks: Sequence[Callback] = (), resume_state: Optional[dict] = None) -> dict:
    """Build a :class:`Trainer`, optionally restore ``resume_state``, run, return the summary."""
    trainer = Trainer(cfg, callbacks=callbacks)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    return trainer.run()
