"""The training engine: plain PyTorch, no Ray or MLflow.

:class:`Trainer` trains one network with latent DA under one selection policy, evaluates on
val and test every epoch, accounts for cost, and hands ``(metrics, checkpoint_state)`` to a
``report`` callback once per epoch, so that the same loop runs standalone and under Ray Tune.
Every random draw comes from generators the run owns; their states are in the checkpoint, so
a run resumed after epoch k replays an uninterrupted one exactly on CPU.

Example::

    summary = Trainer(load_config("search_spaces/digits.yaml")).run()
    summary["test_acc_at_best_val"]
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .adalase import Hypergradient, PseudoValidation, hold_out
from .config import ConfigError, ExperimentConfig
from .data import DataBundle, augment_inputs, build_data
from .models import build_model
from .ops import get_op
from .policies import build_policy, q_movement
from .sites import DAContext

Report = Callable[[dict, dict], None]
STATE_FORMAT = "adalase_tune.trainer/1"
_STREAMS = ("data", "site", "op", "pseudo_val")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


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
        raise ConfigError(f"train.device = {name!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}, but no CUDA device is visible here; use auto or cpu")
    return device


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft (mixed) targets, averaged over the batch."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()


def _cosine(total_steps: int):
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


class Trainer:
    """Everything one run owns: data, model, optimiser, schedule, policy, op, generators, costs."""

    def __init__(self, cfg: ExperimentConfig, data: Optional[DataBundle] = None,
                 report: Optional[Report] = None, progress: bool = False):
        self.cfg, self.report, self.progress = cfg, report, progress
        self.device = pick_device(cfg.train.device)
        data = data if data is not None else build_data(cfg.data)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, data.input_shape, data.num_classes)
        self.sites = model.da_sites
        self.policy = build_policy(cfg, self.sites)
        self.op = get_op(cfg.augment.op, cfg.augment.strength)
        data, pool = hold_out(cfg, data) if self.policy.learns else (data, None)
        cuda = self.device.type == "cuda"
        self.amp = cuda and cfg.train.amp
        fmt = torch.channels_last if cuda and cfg.train.channels_last and len(data.input_shape) == 3 else None
        self.model = model.to(self.device, memory_format=fmt) if fmt else model.to(self.device)
        self.data = data.to(self.device)
        t = cfg.train
        self.steps_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _cosine(t.epochs * self.steps_per_epoch))
        seeds = np.random.SeedSequence(t.seed).spawn(len(_STREAMS) + 1)
        self.rngs = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds)}
        self.torch_gen = torch.Generator(device=self.device)
        self.torch_gen.manual_seed(int(seeds[-1].generate_state(1)[0]))
        pool = pool.to(self.device) if pool is not None else None
        self.pseudo_val = PseudoValidation(cfg, self.data, pool) if self.policy.learns else None
        self.hypergradient = Hypergradient(cfg, self.steps_per_epoch) if self.policy.learns else None
        if self.hypergradient is not None:
            self.policy.start(self.hypergradient.updates(t.epochs))
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self.cost = {"train_s": 0.0, "eval_s": 0.0, "adalase_s": 0.0, "sample_passes": 0}

    # --- one step, one epoch --------------------------------------------------------------------

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, model, x, y, site=None) -> torch.Tensor:
        targets = F.one_hot(y, self.data.num_classes).float()
        ctx = DAContext(site, self.op, self.rngs["op"], self.torch_gen)
        with self._autocast(), ctx:
            logits = model(x)
        return soft_cross_entropy(logits, ctx.mix_targets(targets))

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_epoch(self) -> float:
        self.model.train()
        if self.pseudo_val is not None:
            self.pseudo_val.new_epoch(self.rngs["pseudo_val"])
        order = self.rngs["data"].permutation(len(self.data.train))
        total, count, extra = torch.zeros((), device=self.device), 0, 0.0
        self._sync()
        start = time.perf_counter()
        hyper = self.hypergradient
        for i, (x, y) in enumerate(self.data.train.batches(order, self.cfg.train.batch_size)):
            if self.data.input_augment:
                x = augment_inputs(x, self.rngs["data"])
            site = self.policy.sample(self.rngs["site"])
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(self.model, x, y, site)
            loss.backward()
            if hyper is not None:
                extra += self._timed(hyper.collect, self.step, site, self.model)
            self.optimizer.step()
            if hyper is not None and hyper.window:
                extra += self._timed(self._hypergradients, i == self.steps_per_epoch - 1)
            self.scheduler.step()
            self.step += 1
            total += loss.detach() * len(y)
            count += len(y)
            self.cost["sample_passes"] += len(y)
        mean_loss = (total / count).item()
        self._sync()
        self.cost["train_s"] += time.perf_counter() - start - extra
        self.cost["adalase_s"] += extra
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"train/loss = {mean_loss} in epoch {self.epoch + 1}: training diverged; "
                                     f"lower train.lr (now {self.cfg.train.lr}) or adalase.eta")
        return mean_loss

    def _timed(self, fn, *args) -> float:
        """Run ``fn`` and return its wall time (device-synchronised): AdaLASE's extra work."""
        self._sync()
        t0 = time.perf_counter()
        fn(*args)
        self._sync()
        return time.perf_counter() - t0

    def _hypergradients(self, last_of_epoch: bool) -> None:
        """After the optimizer step: feed the kept training gradients to the policy, against a
        fresh ``g_val`` at the current weights when one is due (see :class:`Hypergradient`)."""
        g_val = None
        if self.hypergradient.fresh_due(self.step, last_of_epoch):
            g_val = self.pseudo_val.gradient(self.model, self._loss)
            self.cost["sample_passes"] += self.pseudo_val.sample_passes
        self.hypergradient.feed(g_val, self.policy)

    @torch.no_grad()
    def evaluate(self, split, batch_size: int = 1024) -> tuple[float, float]:
        """(mean loss, accuracy) on a split, in eval mode, without latent DA."""
        self.model.eval()
        loss, correct = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for x, y in split.batches(np.arange(len(split)), batch_size):
            with self._autocast():
                logits = self.model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        return (loss / len(split)).item(), (correct / len(split)).item()

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train the remaining epochs, reporting after each; returns :meth:`summary`."""
        epochs = self.cfg.train.epochs
        bar = _progress(self.progress, epochs, self.epoch)
        try:
            while self.epoch < epochs:
                metrics = self.run_epoch()
                if bar is not None:
                    bar.update(1)
                    bar.write(_epoch_line(metrics, epochs, self.sites))
                if self.report is not None:
                    self.report(metrics, self.state_dict())
        finally:
            if bar is not None:
                bar.close()
        return self.summary()

    def run_epoch(self) -> dict:
        train_loss = self._train_epoch()
        self._sync()
        start = time.perf_counter()
        val_loss, val_acc = self.evaluate(self.data.val)
        test_loss, test_acc = self.evaluate(self.data.test)
        self._sync()
        self.cost["eval_s"] += time.perf_counter() - start
        self.epoch += 1
        metrics = {"epoch": self.epoch, "train/loss": train_loss, "val/loss": val_loss, "val/acc": val_acc,
                   "test/loss": test_loss, "test/acc": test_acc, "lr": self.scheduler.get_last_lr()[0]}
        if self.policy.learns:
            q = self.policy.probs()
            metrics.update({f"adalase/q/{s.name}": float(p) for s, p in zip(self.sites, q)})
            move = q_movement(q)
            metrics.update({"adalase/q_max_dev": move["max_dev"], "adalase/q_kl": move["kl"],
                            "adalase/skipped": self.policy.skipped})
        c = self.cost
        metrics.update({"cost/train_s": c["train_s"], "cost/eval_s": c["eval_s"], "cost/adalase_s": c["adalase_s"],
                        "cost/device_s": c["train_s"] + c["eval_s"] + c["adalase_s"],
                        "cost/sample_passes": c["sample_passes"]})
        self.history.append(metrics)
        best = max(self.history, key=lambda m: m["val/acc"])  # the first epoch with the best val acc
        metrics.update({"best_val_acc": best["val/acc"], "test_acc_at_best_val": best["test/acc"]})
        return metrics

    def summary(self) -> dict:
        """The run's summary: selection on val, test accuracy at the selected epoch, q, costs."""
        h = self.history
        best = max(range(len(h)), key=lambda i: (h[i]["val/acc"], -i)) if h else None
        learns = self.policy.learns
        q_history = [[m[f"adalase/q/{s.name}"] for s in self.sites] for m in h] if learns else None
        return {
            "config": self.cfg.to_dict(),
            "sites": [s.name for s in self.sites],
            "site_shapes": [list(s.shape) for s in self.sites],
            "epochs": self.epoch,
            "best_epoch": None if best is None else h[best]["epoch"],
            "best_val_acc": None if best is None else h[best]["val/acc"],
            "test_acc_at_best_val": None if best is None else h[best]["test/acc"],
            "final_test_acc": h[-1]["test/acc"] if h else None,
            "q_final": q_history[-1] if learns and h else None,
            "q_history": q_history,
            "q_movement": q_movement(q_history[-1]) if learns and h else None,
            "adalase_skipped": self.policy.skipped if learns else None,
            "splits": self.split_sizes(),
            "history": h,
            "cost": {**self.cost, "device": str(self.device)},
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
            "rngs": {k: r.bit_generator.state for k, r in self.rngs.items()},
            "torch_gen": self.torch_gen.get_state(),
            "history": self.history,
            "cost": dict(self.cost),
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint", adopt_search_params: bool = False) -> None:
        """Restore a run. ``adopt_search_params``: the checkpoint may come from another trial whose
        ``selection.*`` and ``train.seed`` differ (PBT's exploit); this run keeps its own policy."""
        from .config import flatten

        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{source}: not an adalase_tune trainer checkpoint")
        old, new = flatten(state["config"]), flatten(self.cfg.to_dict())
        diff = [k for k in new if old.get(k) != new[k]]
        searched = [k for k in diff if k.startswith("selection.") or k == "train.seed"]
        if diff and not (adopt_search_params and diff == searched):
            raise ConfigError(f"{source} was written with another config (differs in {', '.join(diff[:5])}); "
                              "resume with the same config or start a new run")
        self.epoch, self.step = state["epoch"], state["step"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if not searched:
            self.policy.load_state_dict(state["policy"])
            if self.hypergradient is not None and state.get("hypergradient"):
                self.hypergradient.load_state_dict(state["hypergradient"], self.device)
        for k, r in self.rngs.items():
            r.bit_generator.state = state["rngs"][k]
        self.torch_gen.set_state(state["torch_gen"])
        self.history = list(state["history"])
        self.cost = dict(state["cost"])


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="epochs", unit="ep", dynamic_ncols=True, leave=False)


def _epoch_line(m: dict, epochs: int, sites) -> str:
    line = (f"epoch {m['epoch']:>3}/{epochs}  train/loss {m['train/loss']:.4f}  val/acc {m['val/acc']:.4f}"
            f"  test/acc {m['test/acc']:.4f}  {m['cost/device_s']:.1f}s")
    if f"adalase/q/{sites[0].name}" in m:
        line += "  q " + " ".join(f"{s.name}={m[f'adalase/q/{s.name}']:.3f}" for s in sites)
    return line


def train(cfg: ExperimentConfig, report: Optional[Report] = None, resume_state: Optional[dict] = None,
          progress: bool = False) -> dict:
    """Build a :class:`Trainer`, optionally restore ``resume_state``, run, return the summary."""
    trainer = Trainer(cfg, report=report, progress=progress)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    return trainer.run()
