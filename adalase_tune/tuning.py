"""Sweeps on Ray Tune: every Ray call of the driver lives here.

:func:`sweep` runs one search method (see :mod:`adalase_tune.search`) over the same trainable,
on a local Ray or a cluster (``address``), with results and checkpoints under ``storage`` (a
local/NFS path or a URI Ray accepts, e.g. ``s3://bucket/runs``). All checks on the user's
input happen before Ray starts; a resource request the cluster cannot meet fails at once.

Example::

    grids = sweep(load_config("search_spaces/digits.yaml"), "random", SweepOptions(seeds=[0], num_samples=4))
    grids[0].get_best_result("val/acc", "max").config
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .config import ConfigError, ExperimentConfig
from .data import build_data
from .models import build_model
from .search import METHODS, Grid, SearchPlan, Uniform, nest

METRIC, MODE = "val/acc", "max"


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep; the CLI flags of ``adalase-tune sweep`` map one to one."""

    seeds: Sequence[int] = (0,)
    num_samples: Optional[int] = None  # overrides the method's budget
    budgets: dict = field(default_factory=dict)  # sweep.methods.<name> from the YAML
    max_concurrent: Optional[int] = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: Optional[str] = None
    storage: str = "runs/ray"
    name: Optional[str] = None
    resume: bool = False
    max_failures: int = 0
    verbose: int = 1
    reuse_actors: bool = True  # run trials in warm worker processes (4x faster for short trials here)

    def __post_init__(self):
        if not self.seeds:
            raise ConfigError("--seeds = 0: give at least one seed")
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError(f"--num-samples = {self.num_samples}: it must be >= 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent = {self.max_concurrent}: it must be >= 1")
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"--cpus-per-trial = {self.cpus_per_trial}: it must be > 0")
        if self.gpus_per_trial < 0:
            raise ConfigError(f"--gpus-per-trial = {self.gpus_per_trial}: it must be >= 0")
        if self.max_failures < 0:
            raise ConfigError(f"--max-failures = {self.max_failures}: it must be >= 0")


def describe_sites(cfg: ExperimentConfig) -> list[str]:
    """Build the data and model once on the driver: validates the config and names the sites."""
    data = build_data(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    return [s.name for s in model.da_sites]


def _is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def storage_root(storage: str) -> str:
    """An absolute local path (created and checked writable) or a URI, unchanged."""
    if _is_uri(storage):
        return storage
    path = Path(storage.removeprefix("file://")).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".adalase_tune.write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--storage = {storage!r}: cannot write there ({err.strerror}); "
                          "choose a writable folder or a URI such as s3://bucket/path") from None
    return str(path)


@dataclass
class _Job:
    name: str
    plan: SearchPlan


def plan_jobs(cfg: ExperimentConfig, method: str, options: SweepOptions, sites: Sequence[str]) -> list[_Job]:
    """The Tuners a sweep needs: one with a seed axis, or one per seed for stateful methods."""
    m = METHODS.get(method)
    budget = m.budget(options.budgets.get(method))
    if options.num_samples is not None:
        key = "population" if "population" in budget else "num_samples"
        if key in budget:
            budget[key] = options.num_samples
    base = options.name or method
    if m.per_seed:
        return [_Job(f"{base}-seed{s}", m.plan(sites, [s], budget)) for s in options.seeds]
    return [_Job(base, m.plan(sites, list(options.seeds), budget))]


# --- everything below talks to Ray -------------------------------------------------------------

def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Start a local Ray (dashboard off, on 127.0.0.1 only) or join ``address``; once per process."""
    import ray

    # snapshot the experiment state at every controller step (Ray's default is adaptive, >= 10 s),
    # so that a driver killed with SIGKILL loses as little as possible for --resume
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", **kwargs)


def check_resources(options: SweepOptions) -> None:
    """Fail at once when no node of the cluster could ever run one trial (instead of hanging)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    if options.gpus_per_trial > most_gpu:
        raise ConfigError(f"--gpus-per-trial = {options.gpus_per_trial}, but the largest node of this Ray cluster "
                          f"has {most_gpu:g} GPUs; lower it (fractions like 0.5 share a GPU) or add GPU nodes")
    if options.cpus_per_trial > most_cpu:
        raise ConfigError(f"--cpus-per-trial = {options.cpus_per_trial}, but the largest node of this Ray cluster "
                          f"has {most_cpu:g} CPUs; lower it")


def _ray_value(value):
    from ray import tune

    if isinstance(value, Grid):
        return tune.grid_search(list(value.values))
    if isinstance(value, Uniform):
        return tune.uniform(value.low, value.high)
    return value


def _searcher(plan: SearchPlan, max_concurrent: Optional[int]):
    from ray.tune.search import BasicVariantGenerator

    kind, arg = plan.searcher or ("random", 0)
    if kind == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(sampler=arg)
        if max_concurrent:
            from ray.tune.search import ConcurrencyLimiter

            searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
        return searcher
    return BasicVariantGenerator(random_state=int(arg), max_concurrent=max_concurrent or 0)


def _scheduler(plan: SearchPlan, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if plan.scheduler is None:
        return FIFOScheduler()
    kind, kw = plan.scheduler
    if kind == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=kw["grace_period"],
                             reduction_factor=kw["reduction_factor"])
    random.seed(kw["seed"])  # PBT perturbs with Python's global random module
    np.random.seed(kw["seed"])
    mutations = nest({k: _ray_value(v) for k, v in kw["hyperparam_mutations"].items()})
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=kw["perturbation_interval"],
                                   hyperparam_mutations=mutations, resample_probability=kw["resample_probability"],
                                   custom_explore_fn=clip_weights)


def clip_weights(config: dict) -> dict:
    """PBT perturbs by factors 0.8/1.2, which can leave [0, 1]: clip the site weights back."""
    for site, w in config.get("da_prob", {}).items():
        config["da_prob"][site] = min(1.0, max(0.0, float(w)))
    return config


def _tuner(cfg: ExperimentConfig, job: _Job, options: SweepOptions, root: str, sites, callbacks, tracker_factory):
    from ray import tune

    from .trainable import make_trainable

    trainable = make_trainable(cfg.to_dict(), sites, threads=max(1, int(options.cpus_per_trial)),
                               tracker_factory=tracker_factory)
    trainable = tune.with_resources(trainable, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    path = os.path.join(root, job.name)
    if options.resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    run_config = tune.RunConfig(
        name=job.name, storage_path=root, callbacks=callbacks or None, verbose=options.verbose,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        # PBT exploits other trials' checkpoints at any time: keep them all for pbt
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if _is_pbt(job.plan) else 2),
    )
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, num_samples=job.plan.num_samples,
        search_alg=_searcher(job.plan, options.max_concurrent),
        scheduler=_scheduler(job.plan, cfg.train.epochs),
        max_concurrent_trials=options.max_concurrent,
        reuse_actors=options.reuse_actors,
    )
    space = nest({k: _ray_value(v) for k, v in job.plan.space.items()})
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _progress_callback(job: _Job):
    """One line per finished trial: the progress display of sweeps and benchmarks."""
    import sys

    from ray import tune

    class TrialProgress(tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, what):
            self.done += 1
            r = trial.last_result or {}
            acc = f"val/acc {r['val/acc']:.4f}" if "val/acc" in r else "no result"
            print(f"  {job.name}: trial {self.done}/{job.plan.expected_trials} {what}: {trial.trial_id} "
                  f"({acc}, epoch {r.get('epoch', 0)})", file=sys.stderr, flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED")

    return TrialProgress()


def _is_pbt(plan: SearchPlan) -> bool:
    return plan.scheduler is not None and plan.scheduler[0] == "pbt"


def _existing(root: str, name: str) -> bool:
    return not _is_uri(root) and (Path(root) / name).is_dir() and any((Path(root) / name).iterdir())


def prepare(cfg: ExperimentConfig, method: str, options: SweepOptions, sites: Optional[Sequence[str]] = None):
    """Every check of a sweep that needs no Ray: config, data, sites, budget, storage, names.
    Returns ``(cfg with absolute paths, sites, jobs, storage root)``."""
    cfg = cfg.with_absolute_paths()
    if sites is None:
        sites = describe_sites(cfg)
    jobs = plan_jobs(cfg, method, options, sites)
    root = storage_root(options.storage)
    for job in jobs:
        if not options.resume and _existing(root, job.name):
            raise ConfigError(f"--name: an experiment {job.name!r} already exists in {root}; pass --resume to "
                              "continue it, or choose another --name")
    return cfg, list(sites), jobs, root


def sweep(cfg: ExperimentConfig, method: str, options: SweepOptions = SweepOptions(), callbacks=(),
          tracker_factory=None, sites: Optional[Sequence[str]] = None) -> list:
    """Run ``method`` and return its Ray ``ResultGrid`` s (one, or one per seed for the stateful
    methods optuna, asha and pbt). Finished trials are never rerun with ``resume=True``."""
    cfg, sites, jobs, root = prepare(cfg, method, options, sites)
    connect(options.address)
    check_resources(options)
    return [_tuner(cfg, job, options, root, sites, [*callbacks, _progress_callback(job)], tracker_factory).fit()
            for job in jobs]


def trial_rows(grid, method: str, sites: Sequence[str] = ()) -> list[dict]:
    """One plain row per trial of a ResultGrid: selection on val, test there, costs, status, and
    per site ``q/<site>`` (AdaLASE's final q) or ``da_prob/<site>`` (the weights it ran with)."""
    import json

    rows = []
    for result in grid:
        params = result.config or {}
        m = result.metrics or {}  # the last report: it carries the running best (no progress file needed)
        row = {"method": method, "seed": params.get("train", {}).get("seed"), "trial_id": m.get("trial_id"),
               "status": "ERROR" if result.error else "TERMINATED", "error": str(result.error or "")[:300],
               "params": json.dumps(params, sort_keys=True, default=str)}
        if "best_val_acc" in m:
            row.update({"best_val_acc": float(m["best_val_acc"]), "test_acc_at_best_val": float(m["test_acc_at_best_val"]),
                        "final_test_acc": float(m["test/acc"]), "epochs": int(m["epoch"]),
                        "device_s": float(m["cost/device_s"]), "sample_passes": int(m["cost/sample_passes"]),
                        "finished_at": float(m.get("timestamp", 0)), "node_id": m.get("node_id")})
        elif not result.error:
            row.update(status="ERROR", error="the trial reported no epoch")
        row.update(site_columns(params, m, sites))
        rows.append(row)
    return rows


def site_columns(params: dict, metrics: dict, sites: Sequence[str]) -> dict:
    """``q/<site>`` from an AdaLASE trial's last report, or ``da_prob/<site>`` from its params."""
    selection = params.get("selection", {})
    kind = selection.get("method")
    if kind == "adalase":
        return {f"q/{s}": metrics.get(f"adalase/q/{s}", np.nan) for s in sites}
    if kind == "probs":
        weights = [float(params.get("da_prob", {}).get(s, np.nan)) for s in sites]
    elif kind == "fixed":
        weights = [float(i == int(selection.get("site"))) for i in range(len(sites))]
    elif kind == "uniform":
        weights = [1.0] * len(sites)
    else:
        return {}
    return {f"da_prob/{s}": w for s, w in zip(sites, weights)}
