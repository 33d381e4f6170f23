"""The one Ray Tune trainable behind every method (every Ray call of a trial lives here).

A trial gets its data from the Ray object store (built once on the driver) unless the config
says that every node reads it itself (``data.read_on_nodes``), restores from
``ray.tune.get_checkpoint()`` when Tune restarts it or PBT exploits another trial, and reports
once per epoch. It saves a checkpoint only as often as needed: at every PBT perturbation, and
otherwise every ``checkpoint_s`` seconds (for restarts after a failure and ``--resume``). It
never opens the MLflow store: the driver logs what it reports.

A diverged trial (a loss or a weight not finite) ends at once with its reason in the field
``error`` of its last report: retrying it from a checkpoint would diverge again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import ray
import torch
from ray import tune

from .checkpoint import atomic_save, safe_load
from .engine import Callback, NonFiniteError, Trainer
from .search import trial_config

STATE_FILE = "state.pt"
ERROR_KEY = "error"


def searched(key: str) -> bool:
    """The keys a PBT exploit may change: the searched selection and the trial's seed."""
    return key.startswith("selection.") or key == "train.seed"


class TuneReport(Callback):
    """Reports to Tune, with a checkpoint when one is due.

    ``every_epoch``: one report per epoch (ASHA and PBT act on each). Otherwise epochs are sent in
    batches, at most every ``report_s`` seconds, at a checkpoint and at the end: each report is
    the latest epoch's metrics plus ``epochs``, the list of every epoch since the last report
    (the driver logs them all). A report costs the trial a few milliseconds and the driver as
    much again, which matters for epochs of a tenth of a second.
    """

    def __init__(
        self, checkpoint_every: Optional[int], checkpoint_s: float, every_epoch: bool = True, report_s: float = 1.0
    ):
        self.every, self.checkpoint_s = checkpoint_every, checkpoint_s
        self.every_epoch, self.report_s = every_epoch, report_s
        self.node = ray.get_runtime_context().get_node_id()
        self.last_save = self.last_report = time.monotonic()
        self.pending: list = []

    def _checkpoint_due(self, epoch: int, last: bool) -> bool:
        if self.every is not None:
            return epoch % self.every == 0
        return not last and time.monotonic() - self.last_save >= self.checkpoint_s

    def on_epoch_end(self, trainer, metrics):
        last = metrics["epoch"] == trainer.cfg.train.epochs
        checkpoint = self._checkpoint_due(metrics["epoch"], last)
        self.pending.append(metrics)
        if not (self.every_epoch or checkpoint or last or time.monotonic() - self.last_report >= self.report_s):
            return
        report = {**metrics, "node_id": self.node, "pid": os.getpid(), "device": str(trainer.device)}
        if not self.every_epoch:
            report["epochs"] = self.pending
        self.pending, self.last_report = [], time.monotonic()
        if not checkpoint:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as d:
            atomic_save(trainer.state_dict(), Path(d) / STATE_FILE)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))
        self.last_save = time.monotonic()


def make_trainable(
    base: dict,
    sites: Sequence[str],
    threads: int = 1,
    checkpoint_every: Optional[int] = None,
    checkpoint_s: float = 30.0,
    every_epoch: bool = True,
) -> Callable:
    """A function trainable ``(params, data=None)`` for ``base`` (the resolved experiment dict) over
    ``sites``; pass the data with ``tune.with_parameters(trainable, data=ref)`` (an object ref)."""
    sites = list(sites)

    def adalase_trial(params: dict, data=None) -> None:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        torch.set_num_threads(max(1, int(threads)))
        cfg = trial_config(base, params, sites)
        if isinstance(data, ray.ObjectRef):
            data = ray.get(data)
        trainer = Trainer(cfg, data=data, callbacks=[TuneReport(checkpoint_every, checkpoint_s, every_epoch)])
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                trainer.load_state_dict(safe_load(Path(d) / STATE_FILE), source="Tune checkpoint", may_differ=searched)
        if trainer.epoch >= cfg.train.epochs and trainer.history.epochs:  # restored at its last checkpoint
            tune.report(
                {
                    **trainer.epoch_metrics(),
                    "node_id": ray.get_runtime_context().get_node_id(),
                    "pid": os.getpid(),
                    "device": str(trainer.device),
                }
            )
            return
        try:
            trainer.run()
        except NonFiniteError as err:  # fail fast: a restart from a checkpoint would diverge again
            # val/acc is the searchers' metric: a diverged configuration scores 0 (the row is an error)
            tune.report({ERROR_KEY: f"{type(err).__name__}: {err}", "epoch": trainer.epoch + 1, "val/acc": 0.0})

    return adalase_trial


def warm_worker() -> None:
    """Ray's worker_process_setup_hook: import torch and the engine when a worker process starts,
    so that a trial placed on a fresh worker does not pay for these imports."""
    import torch  # noqa: F401

    from . import engine  # noqa: F401
