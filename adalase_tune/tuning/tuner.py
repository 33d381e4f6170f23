"""The Tuners of a search method: options, jobs (one Tuner each), the trainable with its
resources, and :func:`fit`; plus the pieces of a Tuner of your own (docs/ray_tune.md).

Example::

    connect()
    (job,) = plan_jobs("random", SweepOptions(seeds=[0, 1]), sites, "motifs-random")
    grid = fit(cfg, job, options, root, sites, callbacks=[TrialProgress(job.name, job.plan.expected_trials)])
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ray import tune

from .. import keys
from ..config import ConfigError, ExperimentConfig
from ..search import METHODS, SearchPlan
from ..tracking.rows import trial_error
from .disk_full import nearly_full, no_space, quiet_disk_full, storage_full
from .recovery import StateGuard, prepare_restore
from .specs import param_space, ray_scheduler, ray_searcher
from .storage import check_name, join

METRIC, MODE = keys.VAL_ACC, "max"


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep; the flags of ``adalase-tune sweep`` map one to one.

    Example::

        SweepOptions(seeds=[0, 1, 2], storage="s3://bucket/runs", address="10.0.0.5:6379")
    """

    seeds: Sequence[int] = (0,)
    num_samples: Optional[int] = None  # overrides the method's budget (population for pbt)
    budgets: dict = field(default_factory=dict)  # sweep.methods.<name> from the YAML
    max_concurrent: Optional[int] = None
    cpus_per_trial: float = 1.0  # per worker when workers_per_trial > 1
    gpus_per_trial: float = 0.0  # per worker when workers_per_trial > 1
    workers_per_trial: int = 1  # > 1: each trial is a data-parallel Ray Train run of this many workers
    address: Optional[str] = None  # None: a private local Ray
    storage: str = "runs/ray"
    name: Optional[str] = None
    resume: bool = False
    max_failures: int = 0
    verbose: int = 0
    reuse_actors: bool = True  # run trials in warm worker processes (4x faster for short trials here)
    checkpoint_s: float = 30.0  # a trial checkpoint at most this often (PBT: at every perturbation)
    connect_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("--seeds = 0: give at least one seed")
        for flag, value, low in (
            ("--num-samples", self.num_samples, 1),
            ("--max-concurrent", self.max_concurrent, 1),
            ("--max-failures", self.max_failures, 0),
            ("--workers-per-trial", self.workers_per_trial, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{flag} = {value}: it must be >= {low}")
        if not 0 < self.cpus_per_trial < 1e6:
            raise ConfigError(f"--cpus-per-trial = {self.cpus_per_trial}: it must be > 0")
        if not 0 <= self.gpus_per_trial < 1e6:
            raise ConfigError(f"--gpus-per-trial = {self.gpus_per_trial}: it must be >= 0")
        if self.checkpoint_s < 0:
            raise ConfigError(f"checkpoint_s = {self.checkpoint_s}: it must be >= 0")
        if self.name is not None:
            check_name(self.name)


@dataclass
class Job:
    """One Tuner: its experiment name under the storage root and its plan."""

    name: str
    plan: SearchPlan


def plan_jobs(method: str, options: SweepOptions, sites: Sequence[str], base_name: str) -> list[Job]:
    """The Tuners a method needs: one with a seed axis, or one per seed for stateful methods."""
    m = METHODS.get(method)
    budget = m.budget(options.budgets.get(method))
    if options.num_samples is not None:
        key = "population" if "population" in budget else "num_samples"
        if key in budget:
            budget[key] = options.num_samples
    if m.per_seed:
        return [Job(f"{base_name}-seed{s}", m.plan(sites, [s], budget)) for s in options.seeds]
    return [Job(base_name, m.plan(sites, list(options.seeds), budget))]


def check_workers(job: Job, options: SweepOptions) -> None:
    """Multi-worker trials keep their checkpoints in Ray Train, where PBT cannot move them."""
    if options.workers_per_trial > 1 and job.plan.checkpoint_every() is not None:
        raise ConfigError(
            f"--workers-per-trial = {options.workers_per_trial} with {job.name}: PBT moves checkpoints "
            "between trials, which a multi-worker trial keeps in Ray Train; use --workers-per-trial 1 for pbt"
        )


def _trainable(
    cfg: ExperimentConfig, job: Job, options: SweepOptions, root: str, sites: Sequence[str], data_ref: Any
) -> Any:
    """The trial function with its data and resources: one process, or a Ray Train run of several workers."""
    from ..trainable import make_parallel_trainable, make_trainable

    every_epoch = job.plan.scheduler is not None  # ASHA and PBT act on every epoch
    if options.workers_per_trial > 1:
        check_workers(job, options)
        trainable = make_parallel_trainable(
            cfg.to_dict(),
            sites,
            options.workers_per_trial,
            storage=join(join(root, job.name), "train"),
            cpus=options.cpus_per_trial,
            gpus=options.gpus_per_trial,
            max_failures=options.max_failures,
            checkpoint_s=options.checkpoint_s,
        )
        # the trial only drives its workers, which hold the CPUs and GPUs (Tune refuses an empty request)
        resources: Any = {"cpu": 0, "memory": 2**20}
    else:
        trainable = make_trainable(
            cfg.to_dict(),
            sites,
            checkpoint_every=job.plan.checkpoint_every(),
            checkpoint_s=options.checkpoint_s,
            every_epoch=every_epoch,
        )
        resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    if data_ref is not None:
        trainable = tune.with_parameters(trainable, data=data_ref)
    return tune.with_resources(trainable, resources)


def _concurrency(options: SweepOptions) -> Optional[int]:
    """``--max-concurrent``; for multi-worker trials, by default as many as the cluster's CPUs and GPUs
    hold at once (their drivers hold no resources, so Tune alone would start them all)."""
    if options.max_concurrent or options.workers_per_trial == 1:
        return options.max_concurrent
    import ray

    have = ray.cluster_resources()
    w = options.workers_per_trial
    fits = [have.get("CPU", 0) // (w * options.cpus_per_trial)]
    if options.gpus_per_trial:
        fits.append(have.get("GPU", 0) // (w * options.gpus_per_trial))
    return max(1, int(min(fits)))


def _tuner(
    cfg: ExperimentConfig,
    job: Job,
    options: SweepOptions,
    root: str,
    sites: Sequence[str],
    callbacks: Sequence[Any],
    data_ref: Any,
) -> tune.Tuner:
    """A new Tuner of ``job``, or with ``options.resume`` the saved one (:mod:`.recovery`)."""
    trainable = _trainable(cfg, job, options, root, sites, data_ref)
    if options.resume and prepare_restore(root, job.name):
        # the callbacks come back from the experiment's tuner.pkl (they hold only plain settings)
        return tune.Tuner.restore(join(root, job.name), trainable=trainable, resume_errored=True)
    from ray.tune.logger import JsonLoggerCallback

    run_config = tune.RunConfig(
        name=job.name,
        storage_path=root,
        callbacks=[*callbacks, JsonLoggerCallback()],
        verbose=options.verbose,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        # PBT exploits other trials' checkpoints at any time: keep them all for pbt
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if job.plan.checkpoint_every() else 2),
    )
    tune_config = _tune_config(job.plan, cfg.train.epochs, _concurrency(options), options.reuse_actors)
    return tune.Tuner(trainable, param_space=param_space(job.plan), tune_config=tune_config, run_config=run_config)


def _tune_config(
    plan: SearchPlan, epochs: int, max_concurrent: Optional[int], reuse_actors: bool = True
) -> tune.TuneConfig:
    return tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        num_samples=plan.num_samples,
        search_alg=ray_searcher(plan.searcher, max_concurrent),
        scheduler=ray_scheduler(plan.scheduler, epochs),
        reuse_actors=reuse_actors,
    )


def fit(
    cfg: ExperimentConfig,
    job: Job,
    options: SweepOptions,
    root: str,
    sites: Sequence[str],
    callbacks: Sequence[Any] = (),
    data_ref: Any = None,
) -> Any:
    """Run (or, with ``options.resume``, continue) one Tuner; returns its ResultGrid. Finished
    trials are never rerun. Tune stops gracefully on SIGINT (or SIGUSR1) and returns the partial
    grid: :func:`unfinished` tells."""
    from ..tracking.trials import STORE_LOST

    STORE_LOST.clear()
    tuner = _tuner(cfg, job, options, root, sites, [*callbacks, StateGuard(root, job.name)], data_ref)
    if options.verbose == 0:  # Tune's newer output prints a table and a path even at verbose=0
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    quiet_disk_full(root)
    try:
        grid: Any = tuner.fit()  # a ResultGrid (iterable, though its stubs do not say so)
    except Exception as err:  # the driver's writes (Tune's state, our snapshots) on a full disk
        if no_space(err) or nearly_full(root):  # a truncated file read back (EOFError) on a full disk
            raise storage_full(root, job.name) from None
        raise
    if any(r.error is not None and no_space(r.error) for r in grid):  # a trial's checkpoint did not fit
        raise storage_full(root, job.name)
    return grid


def unfinished(grid: Any) -> int:
    """Trials of a ResultGrid that neither completed nor failed (an interrupt stopped them)."""
    return sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done"))


class TrialProgress(tune.Callback):
    """One line per finished trial: the progress display of sweeps and benchmarks. Tune pickles a
    Tuner's callbacks into its tuner.pkl and uses those copies on a restore, so a callback keeps
    only plain settings.

    Example::

        tune.RunConfig(callbacks=[TrialProgress("motifs-grid", expected=3)])
    """

    def __init__(self, job_name: str, expected: int):
        self.job_name, self.expected, self.done = job_name, expected, 0

    def _line(self, trial: Any, what: str) -> None:
        self.done += 1
        r = trial.last_result or {}
        if keys.ERROR in r:
            what, acc = "FAILED", r[keys.ERROR][:120]
        elif what == "FAILED":
            acc = trial_error(trial.get_error())[:200]
        else:
            acc = f"val/acc {r['best_val_acc']:.4f}" if "best_val_acc" in r else "no result"
        print(
            f"  {self.job_name}: trial {self.done}/{self.expected} {what}: {trial.trial_id} "
            f"({acc}, epoch {r.get('epoch', 0)})",
            file=sys.stderr,
            flush=True,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "FAILED")


# --- your own Tuner (docs/ray_tune.md) --------------------------------------------------------------


def tune_trainable(cfg: ExperimentConfig, *, checkpoint_every: Optional[int] = None, checkpoint_s: float = 30.0) -> Any:
    """The trainable behind every method, for your own ``tune.Tuner``: a trial trains ``cfg`` with its
    config applied (``{"train": {"seed": 1}, "da_pick": {"arm": "stage2", "share": 0.8}}``: sections
    of the experiment, plus the searched point, docs/ray_tune.md) and reports every epoch (``val/acc``,
    ``best_val_acc``, ``test_acc_at_best_val``, ``cost/sample_passes``, ...). Every trial builds the
    data itself, unless you pass it once: ``tune.with_parameters(trainable, data=build_data(cfg.data))``.
    ``checkpoint_every``: epochs between checkpoints, which PBT needs (its ``perturbation_interval``).
    A trial runs ``cfg.train.threads`` torch threads: reserve at least as many CPUs per trial."""
    from ..experiment import arms_of
    from ..trainable import make_trainable

    cfg = cfg.with_absolute_paths()
    return make_trainable(cfg.to_dict(), arms_of(cfg), checkpoint_every, checkpoint_s, every_epoch=True)


def _public_plan(
    method: str, cfg: Union[ExperimentConfig, Sequence[str]], seeds: Sequence[int], budget: Optional[dict]
) -> SearchPlan:
    from ..experiment import arms_of

    m = METHODS.get(method)
    if m.per_seed and len(seeds) != 1:
        raise ConfigError(
            f"seeds = {list(seeds)}: {method} keeps state across its trials, so each seed is a Tuner of its "
            "own; pass one seed, e.g. seeds=[0]"
        )
    arms = arms_of(cfg) if isinstance(cfg, ExperimentConfig) else list(cfg)
    plan = m.plan(arms, list(seeds), m.budget(budget))
    if isinstance(cfg, ExperimentConfig):
        plan.check_epochs(cfg.train.epochs)
    return plan


def search_space(
    method: str,
    cfg: Union[ExperimentConfig, Sequence[str]],
    *,
    seeds: Sequence[int] = (0,),
    budget: Optional[dict] = None,
) -> dict:
    """A baseline's search space for ``param_space``, as Ray Tune objects (``tune.grid_search``,
    ``tune.uniform``, ``tune.choice``) nested as :func:`tune_trainable` takes them. ``cfg``: the
    experiment (its model's arms are searched) or the arms' names; ``seeds``: a grid axis (optuna:
    its searcher per seed sets ``train.seed``; pbt: one seed); ``budget``: the method's
    ``sweep.methods.<name>`` keys."""
    return param_space(_public_plan(method, cfg, seeds, budget))


def tune_config(
    method: str,
    cfg: ExperimentConfig,
    *,
    seeds: Sequence[int] = (0,),
    budget: Optional[dict] = None,
    max_concurrent: Optional[int] = None,
) -> tune.TuneConfig:
    """The ``tune.TuneConfig`` of a method: metric ``val/acc`` (max), its sample count, searcher
    (Optuna's TPE per seed for optuna) and scheduler (ASHA per seed, PBT)."""
    return _tune_config(_public_plan(method, cfg, seeds, budget), cfg.train.epochs, max_concurrent)
