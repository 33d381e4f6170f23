"""The one Ray Tune trainable behind every method (every Ray call of a trial lives here).

A trial gets its data from the Ray object store (built once on the driver) unless the config
says that every node reads it itself (``data.read_on_nodes``), restores from
``ray.tune.get_checkpoint()`` when Tune restarts it or PBT exploits another trial, and reports
once per epoch. It saves a checkpoint only as often as needed: at every PBT perturbation, and
otherwise every ``checkpoint_s`` seconds (for restarts after a failure and ``--resume``). It
never opens the MLflow store: the driver logs what it reports.

A diverged trial (a loss or a weight not finite) ends at once with its reason in the field
``error`` of its last report: retrying it from a checkpoint would diverge again.

With ``workers > 1`` a trial is a Ray Train run (Ray's current Train-in-Tune pattern): the Tune
trial is a light driver that starts a ``TorchTrainer`` of that many data-parallel workers (gloo on
CPUs, NCCL on GPUs), whose results a ``TuneReportCallback`` passes on to Tune. Checkpoints are
then Ray Train's, in ``<storage>/<sweep>/train/<trial id>``: a restarted or resumed trial starts a
Train run of the same name there, and Ray Train restores its latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import ray
import torch
from ray import tune

from . import keys
from .checkpoint import atomic_save, safe_load
from .distributed import World
from .engine import Callback, NonFiniteError, Trainer
from .search import trial_config

if TYPE_CHECKING:
    import threading

    import ray.train
    from ray.util.queue import Queue

    from .data import DataBundle

    # Tune's checkpoints in a trial, Ray Train's in a data-parallel worker
    AnyCheckpoint = Union[tune.Checkpoint, ray.train.Checkpoint]

STATE_FILE = "state.pt"


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
        self,
        checkpoint_every: Optional[int],
        checkpoint_s: float,
        every_epoch: bool = True,
        report_s: float = 1.0,
        report: Optional[Callable[..., None]] = None,
        writes_checkpoints: bool = True,
        checkpoint_type: Optional[type[AnyCheckpoint]] = None,
    ) -> None:
        self.every, self.checkpoint_s = checkpoint_every, checkpoint_s
        self.every_epoch, self.report_s = every_epoch, report_s
        # Tune's report by default; a Ray Train worker passes ray.train.report (every worker reports,
        # only worker 0 with a checkpoint: the others' state is the same)
        self.report, self.writes = report or tune.report, writes_checkpoints
        self.checkpoint_type = checkpoint_type or tune.Checkpoint
        self.node = ray.get_runtime_context().get_node_id()
        self.last_save = self.last_report = time.monotonic()
        self.pending: list[dict] = []
        self.sent = False  # a report was made by this process

    def _checkpoint_due(self, epoch: int, last: bool) -> bool:
        if self.every is not None:
            return epoch % self.every == 0
        return not last and time.monotonic() - self.last_save >= self.checkpoint_s

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        last = metrics["epoch"] == trainer.total_epochs
        checkpoint = self._checkpoint_due(metrics["epoch"], last)
        self.pending.append(metrics)
        if not (self.every_epoch or checkpoint or last or time.monotonic() - self.last_report >= self.report_s):
            return
        report = {
            **metrics,
            "node_id": self.node,
            "pid": os.getpid(),
            **settings(trainer),
            "workers": trainer.world.size,
            "restored_after_epoch": trainer.restored_after,
        }
        if trainer.restored_after and not self.sent:
            # the first report after a restore carries every epoch so far: the driver logs those it
            # lost (buffered when the driver was killed) and skips those it has
            report["epochs"] = list(trainer.history.epochs)
        elif not self.every_epoch:
            report["epochs"] = self.pending
        self.pending, self.last_report, self.sent = [], time.monotonic(), True
        if not checkpoint:
            self.report(report)
            return
        self.last_save = time.monotonic()
        if not self.writes:
            self.report(report, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as d:
            atomic_save(trainer.state_dict(), Path(d) / STATE_FILE)
            self.report(report, checkpoint=self.checkpoint_type.from_directory(d))


def settings(trainer: Trainer) -> dict:
    """What a trial's result depends on besides its config: where and how it ran."""
    return {"device": str(trainer.device), "threads": torch.get_num_threads(), "torch": torch.__version__}


def _run_trial(trainer: Trainer, checkpoint: Optional[AnyCheckpoint], report: Callable[..., None], extra: dict) -> None:
    """Restore ``checkpoint`` (None: a fresh start) and train; a finished or diverged trial reports why."""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(safe_load(Path(d) / STATE_FILE), source="trial checkpoint", may_differ=searched)
    if trainer.epoch >= trainer.total_epochs and trainer.history.epochs:  # restored at its last checkpoint
        report({**trainer.epoch_metrics(), **extra, "epochs": trainer.history.epochs})
        return
    try:
        trainer.run()
    except NonFiniteError as err:  # fail fast: a restart from a checkpoint would diverge again
        # val/acc is the searchers' metric: a diverged configuration scores 0 (the row is an error)
        report({keys.ERROR: f"{type(err).__name__}: {err}", "epoch": trainer.epoch + 1, keys.VAL_ACC: 0.0})


def _quiet_ray_logs() -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def make_trainable(
    base: dict,
    sites: Sequence[str],
    checkpoint_every: Optional[int] = None,
    checkpoint_s: float = 30.0,
    every_epoch: bool = True,
) -> Callable:
    """A function trainable ``(params, data=None)`` for ``base`` (the resolved experiment dict) over
    ``sites``; pass the data with ``tune.with_parameters(trainable, data=ref)`` (an object ref)."""
    sites = list(sites)

    def adalase_trial(params: dict, data: Union[DataBundle, ray.ObjectRef[DataBundle], None] = None) -> None:
        _quiet_ray_logs()
        cfg = trial_config(base, params, sites)
        if isinstance(data, ray.ObjectRef):
            data = ray.get(data)
        trainer = Trainer(cfg, data=data, callbacks=[TuneReport(checkpoint_every, checkpoint_s, every_epoch)])
        node = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
        _run_trial(trainer, tune.get_checkpoint(), tune.report, node)

    return adalase_trial


class EpochLines(Callback):
    """Worker 0's epoch lines into a Ray queue that the driver prints from (``train --workers``)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def on_epoch_end(self, trainer: Trainer, metrics: dict) -> None:
        from .engine import epoch_line

        self.queue.put(epoch_line(metrics, trainer.total_epochs, trainer.arms))


def print_lines(queue: Queue, stop: threading.Event) -> None:
    """Until ``stop`` is set and ``queue`` is empty: print what workers put in ``queue`` to stderr.
    Ends quietly when the queue's actor is gone (Ray shutting down after a Ctrl-C)."""
    import queue as queues
    import sys

    while True:
        try:
            print(queue.get(timeout=0.5), file=sys.stderr, flush=True)
        except queues.Empty:
            if stop.is_set():
                return
        except ray.exceptions.RayError:  # ActorDiedError: the run is over, its lines with it
            return


def data_parallel_worker(config: dict) -> None:
    """Ray Train's loop per worker: one data-parallel worker of a trial (or of ``train --workers``)."""
    import ray.train
    import ray.train.torch

    _quiet_ray_logs()
    cfg = trial_config(config["base"], config["params"], config["sites"])
    data = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    world = World.current()
    device = ray.train.torch.get_device() if config["gpus"] else torch.device("cpu")
    report = TuneReport(
        config["checkpoint_every"],
        config["checkpoint_s"],
        True,  # ray.train.report is collective: every worker reports every epoch, never on its own clock
        report=ray.train.report,
        writes_checkpoints=world.rank == 0,
        checkpoint_type=ray.train.Checkpoint,
    )
    callbacks: list[Callback] = [report]
    if config.get("progress") is not None and world.rank == 0:
        callbacks.append(EpochLines(config["progress"]))
    trainer = Trainer(cfg, data=data, callbacks=callbacks, world=world, device=device)
    extra = {"node_id": report.node, "pid": os.getpid(), "workers": world.size}
    _run_trial(trainer, ray.train.get_checkpoint(), ray.train.report, extra)


def run_data_parallel(
    config: dict,
    workers: int,
    cpus: float,
    gpus: float,
    storage: str,
    name: str,
    max_failures: int,
    callbacks: Sequence[ray.train.UserCallback] = (),
    progress: bool = False,
) -> ray.train.Result:
    """Start and wait for a ``TorchTrainer`` of ``workers`` workers running :func:`data_parallel_worker`
    (a run of the same ``name`` under ``storage`` continues from its latest checkpoint). ``progress``:
    print worker 0's epoch lines here as they come."""
    if progress:
        import threading

        from ray.util.queue import Queue

        queue, stop = Queue(), threading.Event()
        printer = threading.Thread(target=print_lines, args=(queue, stop), daemon=True)
        printer.start()
        try:
            return run_data_parallel({**config, "progress": queue}, workers, cpus, gpus, storage, name, max_failures)
        finally:
            stop.set()
            printer.join(timeout=5)
            queue.shutdown()
    import ray.train
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        data_parallel_worker,
        train_loop_config={**config, "gpus": gpus},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            # mypy reads ray.train's v1 RunConfig (Tune callbacks); Ray Train v2, which runs here, takes UserCallbacks
            callbacks=list(callbacks),  # type: ignore[arg-type]
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def make_parallel_trainable(
    base: dict,
    sites: Sequence[str],
    workers: int,
    storage: str,
    cpus: float = 1.0,
    gpus: float = 0.0,
    max_failures: int = 0,
    checkpoint_s: float = 30.0,
) -> Callable:
    """A Tune trial that runs as ``workers`` data-parallel Ray Train workers (``cpus``/``gpus`` each).

    The trial itself only drives the Train run; Train's own storage (``storage``/<trial id>) holds
    the checkpoints, and a restarted trial continues there."""
    sites = list(sites)

    def adalase_parallel_trial(params: dict, data: Union[DataBundle, ray.ObjectRef[DataBundle], None] = None) -> None:
        from ray.tune.integration.ray_train import TuneReportCallback

        _quiet_ray_logs()
        config = {
            "base": base,
            "params": params,
            "sites": sites,
            "data": data,
            "checkpoint_every": None,
            "checkpoint_s": checkpoint_s,
        }
        trial_id = tune.get_context().get_trial_id()
        run_data_parallel(config, workers, cpus, gpus, storage, trial_id, max_failures, [TuneReportCallback()])

    return adalase_parallel_trial


def warm_worker() -> None:
    """Ray's worker_process_setup_hook: import torch and the engine when a worker process starts,
    so that a trial placed on a fresh worker does not pay for these imports."""
    import torch  # noqa: F401

    from . import engine  # noqa: F401
