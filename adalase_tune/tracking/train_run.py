"""The MLflow run of ``adalase-tune train``: an engine callback, its run id kept in the trainer's
checkpoint so that ``--resume`` continues the same run.

Example::

    trainer.callbacks = [TrainRun(Tracking("sqlite:///mlflow.db", "train")), CheckpointDir("ckpt", False)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..engine import Callback
from ..interrupts import signals_held
from . import RunLogger, Tracking, epoch_metrics, final_metrics, trial_params

if TYPE_CHECKING:
    from ..engine import Trainer


class TrainRun(Callback):
    """An engine callback that logs one ``adalase-tune train`` run; its run id travels in the
    trainer's checkpoint, so ``--resume`` continues the same run. Epochs are written at each
    epoch's end, before the checkpoint callback commits that epoch (it comes later in the list).

    Each write holds Ctrl-C and SIGTERM until it is done (``interrupts.signals_held``): a
    KeyboardInterrupt raised inside SQLAlchemy's flush left the SQLite store's write lock taken,
    and ending the run KILLED then failed with "database is locked" (exit 1, not 130)."""

    def __init__(self, tracking: Tracking):
        self.tracking = tracking
        self.run_id: Optional[str] = None
        self.logger: Optional[RunLogger] = None

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg
        sites = [a.name for a in trainer.arms]  # sites, or (site, op) pairs
        with signals_held():
            self.logger = self.tracking.run_logger(
                f"train {cfg.selection.method} seed {cfg.train.seed}",
                {"run_kind": "train", "method_selection": cfg.selection.method, "sites": ",".join(sites)},
                trial_params(cfg, {}),
                run_id=self.run_id,
            )
        self.run_id = self.logger.run_id

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        assert self.logger is not None, "on_train_start comes first"
        with signals_held():
            self.logger.log_epoch(epoch_metrics(metrics), int(metrics["epoch"]))
            self.logger.flush()

    def on_train_end(self, trainer: Trainer, summary: dict) -> None:
        assert self.logger is not None, "on_train_start comes first"
        with signals_held():
            self.logger.tag("device", summary["cost"]["device"])
            self.logger.finish(
                final_metrics({**summary["history"][-1], **summary}), summary["q_history"], summary["arms"]
            )

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        if self.logger is None:
            return
        if isinstance(error, KeyboardInterrupt):
            self.logger.kill()
        else:
            self.logger.fail(f"{type(error).__name__}: {error}")

    def state_dict(self) -> dict:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict) -> None:
        self.run_id = state.get("run_id")
