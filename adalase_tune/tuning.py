"""Sweeps on Ray Tune: every Ray call of the driver lives here.

:func:`fit` runs the Tuners of one search method (see :mod:`adalase_tune.search`) over the
same trainable, on a private local Ray or a cluster (``address``), with results and checkpoints
under ``storage`` (a path, shared on a cluster, or a URI such as ``s3://bucket/runs``). The
driver logs every trial to MLflow from Tune's callbacks (:class:`MLflowTrials`), so trials never
touch the tracking store. ``adalase_tune.experiment`` orchestrates; this module only talks to Ray.

Example::

    connect()
    grid = fit(cfg, job, options, root, sites, callbacks=[TrialProgress(job.name, job.plan.expected_trials)])
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback

from .config import ConfigError, ExperimentConfig
from .locks import ExperimentLock, lock_holder, lock_path  # noqa: F401  (the storage's writer lock)
from .search import (
    METHODS,
    ASHASpec,
    Choice,
    Grid,
    OptunaSearcher,
    PBTSpec,
    RandomSearcher,
    SearchPlan,
    Uniform,
    nest,
    site_weights,
    trial_config,
)

METRIC, MODE = "val/acc", "max"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "memory")
STATE_BACKUP = ".adalase_tune_state"
TOKEN_HINT = (
    "a cluster started by `ray start` uses token authentication (Ray's default): in this shell set "
    "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token "
    "that `ray start` wrote on the head node)"
)


def check_name(name: str, flag: str = "--name") -> str:
    """A name that is one safe path component and one safe MLflow filter literal."""
    if not NAME.match(name):
        raise ConfigError(
            f"{flag} = {name!r}: use letters, digits, '.', '_' and '-' only (one path component, "
            "at most 100 characters, not starting with '.' or '-')"
        )
    return name


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep; the flags of ``adalase-tune sweep`` map one to one."""

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

    def __post_init__(self):
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


def join(root: str, name: str) -> str:
    """``root/name`` for a path or a URI, keeping a URI's query (``?endpoint_override=...``) at the end."""
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def storage_root(storage: str) -> str:
    """An absolute local path (checked writable, not created yet) or a URI of a scheme Ray reads."""
    if is_uri(storage):
        scheme = storage.split("://", 1)[0]
        if scheme not in URI_SCHEMES:
            raise ConfigError(
                f"--storage = {storage!r}: unknown scheme {scheme!r}; use a path or one of "
                + ", ".join(f"{s}://" for s in URI_SCHEMES)
            )
        return storage
    from .paths import check_dir

    return str(check_dir(storage.removeprefix("file://"), "--storage"))


def make_storage(root: str) -> None:
    """Create a local storage root (once every check has passed)."""
    if not is_uri(root):
        Path(root).mkdir(parents=True, exist_ok=True)


def experiment_exists(root: str, name: str) -> bool:
    """Whether ``root/name`` holds an experiment: registered by adalase-tune, or Tune state."""
    if not is_uri(root):
        folder = Path(root) / name
        return folder.is_dir() and any(folder.iterdir())
    return load_meta(root, name) is not None or tune.Tuner.can_restore(join(root, name))


META_FILE = "adalase_tune.json"


def _fs(root: str):
    """(pyarrow filesystem, path) of a storage root, local or URI."""
    import pyarrow.fs

    if is_uri(root):
        return pyarrow.fs.FileSystem.from_uri(root)
    return pyarrow.fs.LocalFileSystem(), root


def save_meta(root: str, name: str, meta: dict) -> None:
    """Write what a Tuner was started with, so that ``--resume`` can check it is the same."""
    fs, path = _fs(root)
    folder = f"{path.rstrip('/')}/{name}"
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/{META_FILE}") as f:
        f.write(json.dumps(meta, sort_keys=True, default=str).encode())


def load_meta(root: str, name: str) -> Optional[dict]:
    import pyarrow.fs

    fs, path = _fs(root)
    target = f"{path.rstrip('/')}/{name}/{META_FILE}"
    if fs.get_file_info(target).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


# --- everything below talks to Ray -------------------------------------------------------------


def private_token() -> None:
    """Ray's session token file (``~/.ray/auth_token``, which Ray writes 0644) made readable by
    this user only: with it anyone on the machine could join the local Ray and run code in it."""
    path = Path.home() / ".ray" / "auth_token"
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(0o600)


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, timeout_s: float = 60.0) -> None:
    """Start a private local Ray (``address="local"``: never a stale cluster that ``ray start``
    left behind) without a dashboard, or join ``address`` after checking that something answers
    there; once per process. Errors are one line (:class:`ConfigError`). Ray binds some of its
    servers to every interface and rewrites 127.0.0.1 to the machine's address, so it cannot be
    confined to loopback; its token authentication guards them (SECURITY.md). A local Ray's
    workers get this process's own import folders (``references.import_path``): a model or dataset given
    as ``module:attr`` imports there as it does here."""
    import ray

    # Tune's default loggers write CSV, JSON and TensorBoard files per trial (with an fsync per
    # result); _tuner() keeps only the JSON one (result.json, which ResultGrid reads)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune snapshots its state whenever a trial's old checkpoints are dropped, which keeps a resume
    # consistent; with frequent checkpoints it then warns at every snapshot: the snapshots stay
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import logging

    # PBT's exploits make the JSON logger look for a donor's result.json before it exists: harmless
    logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)
    if address:
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return
    # trials' own output stays in Ray's logs: failures come back with their reason in the results
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    try:
        _keep_sigterm()
        if address:
            from .references import IMPORTS_VAR, registering_modules, user_code

            # a cluster's nodes get a copy of the user's own modules (py_modules), and re-import
            # the ones that registered names, as a local Ray's workers do
            shipped = user_code()
            env: dict[str, Any] = {"py_modules": shipped} if shipped else {}
            if registering_modules():
                env["env_vars"] = {IMPORTS_VAR: ",".join(registering_modules())}
            ray.init(address=address, runtime_env=env or None, **kwargs)
        else:
            from .references import IMPORTS_VAR, import_path, registering_modules

            # the workers import what this process imports (a model.name such as mypkg.models:build):
            # the user's folders of sys.path go on their PYTHONPATH; the modules that called
            # MODELS.register (or another registry's) are imported again there on a name's first use
            env = {"PYTHONPATH": os.pathsep.join(import_path()), IMPORTS_VAR: ",".join(registering_modules())}
            env = {k: v for k, v in env.items() if v}
            ray.init(address="local", num_cpus=num_cpus, runtime_env={"env_vars": env} if env else None, **kwargs)
            private_token()
    except Exception as err:  # ConnectionError, AuthenticationError, RuntimeError, TimeoutError, ...
        ray.shutdown()
        text = " ".join(str(err).split())
        no_token = address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token"
        if "auth" in text.lower() or "token" in text.lower() or no_token:
            # a driver given an address does not use token authentication unless told to; Ray
            # then retries for half a minute and reports only a ConnectionError
            raise ConfigError(f"--address = {address!r}: could not join ({type(err).__name__}); {TOKEN_HINT}") from None
        where = f"--address = {address!r}" if address else "local Ray"
        raise ConfigError(
            f"{where}: could not connect within {timeout_s:.0f} s ({type(err).__name__}: "
            f"{text[:200]}); check the address and that the cluster is up (`ray status`)"
        ) from None


def _keep_sigterm() -> None:
    """``ray.init`` puts a SIGTERM handler of its own (``sys.exit``) on the main thread while it
    starts: a SIGTERM in those seconds then raised SystemExit wherever the driver was (even in a
    logging lock, where it is ignored, and the sweep ran on). The handler in place stays instead
    (the command's, which stops the work at its next safe point); ``Signals.reclaim`` takes back what
    Ray's core installs later."""
    import ray._private.utils as ray_utils

    if hasattr(ray_utils, "set_sigterm_handler"):
        ray_utils.set_sigterm_handler = lambda handler: None


def check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connection to ``address`` (host:port or ray://host:port) within ``timeout_s``: Ray's own
    connect retries for many minutes when nothing listens there."""
    import socket

    if address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address = {address!r}: expected host:port (a cluster's GCS, e.g. 10.0.0.5:6379) or "
            "ray://host:10001 (a Ray client server)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout_s, 15.0)):
            pass
    except OSError as err:
        raise ConfigError(
            f"--address = {address!r}: nothing answers there ({err.strerror or err}); check the address "
            "and that the cluster is up (`ray status` on its head node)"
        ) from None


def check_resources(options: SweepOptions) -> None:
    """Fail at once when no node of the cluster could ever run one trial (instead of hanging)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    if options.gpus_per_trial > most_gpu:
        raise ConfigError(
            f"--gpus-per-trial = {options.gpus_per_trial}, but the largest node of this Ray cluster "
            f"has {most_gpu:g} GPUs; lower it (fractions like 0.5 share a GPU) or add GPU nodes"
        )
    if options.cpus_per_trial > most_cpu:
        raise ConfigError(
            f"--cpus-per-trial = {options.cpus_per_trial}, but the largest node of this Ray cluster "
            f"has {most_cpu:g} CPUs; lower it"
        )
    w = options.workers_per_trial
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    if w > 1 and (w * options.cpus_per_trial > total_cpu or w * options.gpus_per_trial > total_gpu):
        raise ConfigError(
            f"--workers-per-trial = {w} with {options.cpus_per_trial:g} CPUs and {options.gpus_per_trial:g} GPUs "
            f"per worker needs {w * options.cpus_per_trial:g} CPUs and {w * options.gpus_per_trial:g} GPUs, but "
            f"this Ray cluster has {total_cpu:g} CPUs and {total_gpu:g} GPUs; lower --workers-per-trial or the "
            "resources per worker"
        )


def put(value):
    """Put ``value`` in the Ray object store once; trials get it by reference."""
    import ray

    return ray.put(value)


def _ray_value(value):
    """A Ray-free spec of :mod:`adalase_tune.search` as its Ray Tune object; anything else as it is."""
    if isinstance(value, Grid):
        return tune.grid_search(list(value.values))
    if isinstance(value, Uniform):
        return tune.uniform(value.low, value.high)
    if isinstance(value, Choice):
        return tune.choice(list(value.values))
    return value


def _searcher(plan: SearchPlan, max_concurrent: Optional[int]):
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    spec = plan.searcher
    if isinstance(spec, OptunaSearcher):
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(sampler=spec.sampler())
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher
    if isinstance(spec, RandomSearcher):
        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent or 0)
    raise TypeError(f"unknown searcher spec {spec!r}")


def _scheduler(plan: SearchPlan, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    spec = plan.scheduler
    if spec is None:
        return FIFOScheduler()
    if isinstance(spec, ASHASpec):
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    if isinstance(spec, PBTSpec):
        random.seed(spec.seed)  # PBT perturbs with Python's global random module
        np.random.seed(spec.seed)
        # a categorical mutates as PBT's list form: resampled, or shifted to a neighbouring value
        mutations = nest(
            {k: list(v.values) if isinstance(v, Choice) else _ray_value(v) for k, v in spec.mutations.items()}
        )
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=spec.perturbation_interval,
            hyperparam_mutations=mutations,
            resample_probability=spec.resample_probability,
            custom_explore_fn=clip_weights,
        )
    raise TypeError(f"unknown scheduler spec {spec!r}")


def clip_weights(config: dict) -> dict:
    """PBT perturbs by factors 0.8/1.2, which can leave [0, 1]: clip the site weights (or the
    picked arm's share) back."""
    for site, w in config.get("da_prob", {}).items():
        config["da_prob"][site] = min(1.0, max(0.0, float(w)))
    if "share" in config.get("da_pick", {}):
        config["da_pick"]["share"] = min(1.0, max(0.0, float(config["da_pick"]["share"])))
    return config


def check_budget(plan: SearchPlan, epochs: int) -> None:
    """Scheduler settings that cannot work with this run length, before Ray starts."""
    spec = plan.scheduler
    if isinstance(spec, ASHASpec) and spec.grace_period > epochs:
        raise ConfigError(
            f"sweep.methods.asha.grace_period = {spec.grace_period}, but train.epochs = {epochs}: "
            "no trial could be stopped early; lower it"
        )
    if isinstance(spec, PBTSpec) and spec.perturbation_interval >= epochs:
        raise ConfigError(
            f"sweep.methods.pbt.perturbation_interval = {spec.perturbation_interval}, but train.epochs = "
            f"{epochs}: the population would never be perturbed; lower it below train.epochs"
        )


def _trainable(cfg: ExperimentConfig, job: Job, options: SweepOptions, root: str, sites, data_ref):
    """The trial function with its data and resources: one process, or a Ray Train run of several workers."""
    from .trainable import make_parallel_trainable, make_trainable

    needs_ckpt = job.plan.checkpoint_every()
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
            checkpoint_every=needs_ckpt,
            checkpoint_s=options.checkpoint_s,
            every_epoch=every_epoch,
        )
        resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    if data_ref is not None:
        trainable = tune.with_parameters(trainable, data=data_ref)
    return tune.with_resources(trainable, resources)


def check_workers(job: Job, options: SweepOptions) -> None:
    """Multi-worker trials keep their checkpoints in Ray Train, where PBT cannot move them."""
    if options.workers_per_trial > 1 and job.plan.checkpoint_every() is not None:
        raise ConfigError(
            f"--workers-per-trial = {options.workers_per_trial} with {job.name}: PBT moves checkpoints "
            "between trials, which a multi-worker trial keeps in Ray Train; use --workers-per-trial 1 for pbt"
        )


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


def _no_trial_yet(root: str, name: str) -> bool:
    """A local experiment whose saved state holds no trial (stopped before Tune made one): restoring
    it would run nothing, since its searcher's state says the trials were made. Its Ray state goes
    (our own meta stays) and the job starts afresh."""
    if is_uri(root):
        return False
    folder = Path(root) / name
    states = sorted(folder.glob("experiment_state-*.json"))
    try:
        if not states or json.loads(states[-1].read_text()).get("trial_data"):
            return False
    except (OSError, ValueError):
        return False
    searchers = [*folder.glob("basic-variant-state-*.json"), *folder.glob("searcher-state-*")]
    for path in [*states, *searchers, *_pickles(folder)]:
        path.unlink(missing_ok=True)
    return True


def _tuner(cfg: ExperimentConfig, job: Job, options: SweepOptions, root: str, sites, callbacks, data_ref):
    needs_ckpt = job.plan.checkpoint_every()
    trainable = _trainable(cfg, job, options, root, sites, data_ref)
    path = join(root, job.name)
    if options.resume and tune.Tuner.can_restore(path) and not _no_trial_yet(root, job.name):
        repair_state(root, job.name)
        repair_checkpoints(root, job.name)
        # the callbacks come back from the experiment's tuner.pkl (they hold only plain settings)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    from ray.tune.logger import JsonLoggerCallback

    run_config = tune.RunConfig(
        name=job.name,
        storage_path=root,
        callbacks=[*callbacks, JsonLoggerCallback()],
        verbose=options.verbose,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        # PBT exploits other trials' checkpoints at any time: keep them all for pbt
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if needs_ckpt else 2),
    )
    tune_config = _tune_config(job.plan, cfg.train.epochs, _concurrency(options), options.reuse_actors)
    return tune.Tuner(trainable, param_space=_param_space(job.plan), tune_config=tune_config, run_config=run_config)


def _param_space(plan: SearchPlan) -> dict:
    return nest({k: _ray_value(v) for k, v in plan.space.items()})


def _tune_config(plan: SearchPlan, epochs: int, max_concurrent: Optional[int], reuse_actors: bool = True):
    return tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        num_samples=plan.num_samples,
        search_alg=_searcher(plan, max_concurrent),
        scheduler=_scheduler(plan, epochs),
        reuse_actors=reuse_actors,
    )


# --- your own Tuner (docs/ray_tune.md) --------------------------------------------------------------


def tune_trainable(cfg: ExperimentConfig, *, checkpoint_every: Optional[int] = None, checkpoint_s: float = 30.0):
    """The trainable behind every method, for your own ``tune.Tuner``: a trial trains ``cfg`` with its
    config applied (``{"train": {"seed": 1}, "da_pick": {"arm": "stage2", "share": 0.8}}``: sections
    of the experiment, plus the searched point, docs/ray_tune.md) and reports every epoch (``val/acc``,
    ``best_val_acc``, ``test_acc_at_best_val``, ``cost/sample_passes``, ...). Every trial builds the
    data itself, unless you pass it once: ``tune.with_parameters(trainable, data=build_data(cfg.data))``.
    ``checkpoint_every``: epochs between checkpoints, which PBT needs (its ``perturbation_interval``).
    A trial runs ``cfg.train.threads`` torch threads: reserve at least as many CPUs per trial."""
    from .experiment import arms_of
    from .trainable import make_trainable

    cfg = cfg.with_absolute_paths()
    return make_trainable(cfg.to_dict(), arms_of(cfg), checkpoint_every, checkpoint_s, every_epoch=True)


def _public_plan(method: str, cfg, seeds: Sequence[int], budget: Optional[dict]) -> SearchPlan:
    from .experiment import arms_of

    m = METHODS.get(method)
    if m.per_seed and len(seeds) != 1:
        raise ConfigError(
            f"seeds = {list(seeds)}: {method} keeps state across its trials, so each seed is a Tuner of its "
            "own; pass one seed, e.g. seeds=[0]"
        )
    arms = arms_of(cfg) if isinstance(cfg, ExperimentConfig) else list(cfg)
    plan = m.plan(arms, list(seeds), m.budget(budget))
    if isinstance(cfg, ExperimentConfig):
        check_budget(plan, cfg.train.epochs)
    return plan


def search_space(method: str, cfg, *, seeds: Sequence[int] = (0,), budget: Optional[dict] = None) -> dict:
    """A baseline's search space for ``param_space``, as Ray Tune objects (``tune.grid_search``,
    ``tune.uniform``, ``tune.choice``) nested as :func:`tune_trainable` takes them. ``cfg``: the
    experiment (its model's arms are searched) or the arms' names; ``seeds``: a grid axis (one seed
    for optuna, asha and pbt); ``budget``: the method's ``sweep.methods.<name>`` keys."""
    return _param_space(_public_plan(method, cfg, seeds, budget))


def tune_config(
    method: str,
    cfg: ExperimentConfig,
    *,
    seeds: Sequence[int] = (0,),
    budget: Optional[dict] = None,
    max_concurrent: Optional[int] = None,
):
    """The ``tune.TuneConfig`` of a method: metric ``val/acc`` (max), its sample count, searcher
    (Optuna's TPE for optuna) and scheduler (ASHA, PBT)."""
    return _tune_config(_public_plan(method, cfg, seeds, budget), cfg.train.epochs, max_concurrent)


def fit(
    cfg: ExperimentConfig,
    job: Job,
    options: SweepOptions,
    root: str,
    sites: Sequence[str],
    callbacks: Sequence = (),
    data_ref=None,
):
    """Run (or, with ``options.resume``, continue) one Tuner; returns its ResultGrid. Finished
    trials are never rerun. Tune stops gracefully on SIGINT (or SIGUSR1) and returns the partial
    grid: :func:`unfinished` tells."""
    STORE_LOST.clear()
    tuner = _tuner(cfg, job, options, root, sites, [*callbacks, StateGuard(root, job.name)], data_ref)
    if options.verbose == 0:  # Tune's newer output prints a table and a path even at verbose=0
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    _quiet_disk_full()
    try:
        grid = tuner.fit()
    except Exception as err:  # the driver's writes (Tune's state, our snapshots) on a full disk
        if _no_space(err) or _nearly_full(root):  # a truncated file read back (EOFError) on a full disk
            raise _storage_full(root, job.name) from None
        raise
    if any(r.error is not None and _no_space(r.error) for r in grid):  # a trial's checkpoint did not fit
        raise _storage_full(root, job.name)
    return grid


def _nearly_full(root: str) -> bool:
    if is_uri(root):
        return False
    try:
        stat = os.statvfs(root)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20


class _DiskFullRecords:
    """Drops Ray's log records (with their tracebacks) of a write that failed for lack of space:
    the sweep says it in one line (:func:`_storage_full`)."""

    def filter(self, record) -> bool:
        import logging

        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        return "No space left on device" not in text and "Errno 28" not in text


def _quiet_disk_full() -> None:
    import logging

    for logger in (logging.getLogger("ray"), logging.getLogger("ray.tune"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, _DiskFullRecords) for f in handler.filters):
                handler.addFilter(_DiskFullRecords())


def settle_runs(grid, tracking, parent: Optional[str], base: dict, sites: Sequence[str]) -> None:
    """After a fit: a trial that ended in Tune but whose MLflow run did not (the store went away as it
    ended, or a resume logs into a new store) gets its run ended now from Tune's record: FINISHED
    with its final metrics, or FAILED with its reason. Runs already ended are left as they are."""
    from .tracking import final_metrics, literal, trial_params
    from .trainable import ERROR_KEY

    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id") or _trial_id(result.path)
        if not trial_id or not (m.get("done") or result.error is not None or ERROR_KEY in m):
            continue
        found = tracking._find(f"tags.`ray.trial_id` = {literal(trial_id)}")
        if found is not None and found.info.status != "RUNNING":
            continue
        cfg = trial_config(base, result.config or {}, sites)
        tags = {"run_kind": "trial", "mlflow.parentRunId": parent, "sites": ",".join(sites),
                "method_selection": cfg.selection.method}  # fmt: skip
        name = f"{cfg.selection.method} seed {cfg.train.seed} {trial_id}"
        run = tracking.run_logger(name, tags, trial_params(cfg, site_weights(result.config or {}, sites)), trial_id)
        if result.error is not None or ERROR_KEY in m:
            run.fail(" ".join((m.get(ERROR_KEY) or trial_error(result.error)).split())[:2000])
        else:
            run.finish(final_metrics(m))


def _no_space(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it, or a trial's error text) is a full disk or quota."""
    import errno

    seen: set = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left on device" in str(err).lower() or "disk quota exceeded" in str(err).lower():
            return True
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def _storage_full(root: str, name: str):
    """The one-line StorageError of a full ``--storage``, once the partial checkpoints that the full
    disk left (never recorded by Tune: it records a checkpoint once it is whole) are removed."""
    import errno

    from .checkpoint import storage_error

    if not is_uri(root):
        _drop_partial_checkpoints(Path(root) / name)
    return storage_error(join(root, name), OSError(errno.ENOSPC, "no space left"))


def _drop_partial_checkpoints(folder: Path) -> None:
    from .checkpoint import CheckpointError, safe_load
    from .trainable import STATE_FILE

    for ckpt in folder.glob("*/checkpoint_*"):
        try:
            safe_load(ckpt / STATE_FILE)
        except CheckpointError:
            shutil.rmtree(ckpt, ignore_errors=True)
    for tmp in folder.glob(f"{STATE_BACKUP}/.*.tmp"):
        tmp.unlink(missing_ok=True)


def unfinished(grid) -> int:
    """Trials of a ResultGrid that neither completed nor failed (an interrupt stopped them)."""
    return sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done"))


def trial_error(error) -> str:
    """A failed trial's reason on one line: the exception raised in the trial (``ConfigError: ...``),
    without Ray's wrapper and traceback."""
    cause = getattr(error, "cause", None)  # a RayTaskError holds the trial's own exception
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        lines = [line for line in str(error).splitlines() if line.strip()]
        text = lines[-1] if lines else type(error).__name__
        text = re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", text.strip())  # a traceback's last line names the module
    return " ".join(text.split())[:300]


def _trial_id(path: Optional[str]) -> Optional[str]:
    """The trial id in a trial's folder name (``adalase_trial_fc6a3_00000_0_...``): a trial that
    failed before its first report has no metrics to take it from."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})(_|$)", Path(path or "").name)
    return found.group(1) if found else None


def trial_rows(grid, method: str, sites: Sequence[str] = ()) -> list[dict]:
    """One plain row per trial of a ResultGrid: selection on val, test there, costs, status, and
    per site ``q/<site>`` (AdaLASE's final q) or ``da_prob/<site>`` (the weights it ran with)."""
    from .trainable import ERROR_KEY

    rows = []
    for result in grid:
        params = result.config or {}
        m = result.metrics or {}  # the last report: it carries the running best (no progress file needed)
        row = {
            "method": method,
            "seed": params.get("train", {}).get("seed"),
            "trial_id": m.get("trial_id") or _trial_id(result.path),
            "status": "TERMINATED",
            "error": "",
            "params": json.dumps(params, sort_keys=True, default=str),
        }
        if result.error is not None or ERROR_KEY in m:
            row.update(status="ERROR", error=m.get(ERROR_KEY) or trial_error(result.error))
        elif not m.get("done"):
            row.update(status="UNFINISHED", error="interrupted before it finished")
        if "best_val_acc" in m and row["status"] == "TERMINATED":
            row.update(
                {
                    "best_val_acc": float(m["best_val_acc"]),
                    "test_acc_at_best_val": float(m["test_acc_at_best_val"]),
                    "final_test_acc": float(m["test/acc"]),
                    "epochs": int(m["epoch"]),
                    "device_s": float(m["cost/device_s"]),
                    "sample_passes": int(m["cost/sample_passes"]),
                    "finished_at": float(m.get("timestamp", 0)),
                    "node_id": m.get("node_id"),
                    **{k: m.get(k) for k in ("device", "threads", "torch")},  # what the result depends on
                }
            )
        elif row["status"] == "TERMINATED":
            row.update(status="ERROR", error="the trial reported no epoch")
        if params.get("selection", {}).get("method") == "adalase":
            row.update({f"q/{s}": m.get(f"adalase/q/{s}", np.nan) for s in sites})
        else:
            row.update(site_weights(params, sites))
        rows.append(row)
    return rows


# --- driver-side callbacks -----------------------------------------------------------------------
# Tune pickles a Tuner's callbacks into its tuner.pkl and uses those copies on a restore, so they
# keep only plain settings in their state and rebuild their connections in setup().


class TrialProgress(tune.Callback):
    """One line per finished trial: the progress display of sweeps and benchmarks."""

    def __init__(self, job_name: str, expected: int):
        self.job_name, self.expected, self.done = job_name, expected, 0

    def _line(self, trial, what):
        from .trainable import ERROR_KEY

        self.done += 1
        r = trial.last_result or {}
        if ERROR_KEY in r:
            what, acc = "FAILED", r[ERROR_KEY][:120]
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

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED")


_LIVE: list = []  # the MLflowTrials of this driver process, for close_open_runs()


class MLflowTrials(MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback``, extended: runs nested under a parent run, a resumed trial
    continuing its own run, replayed epochs skipped, metrics buffered and written in batches, a
    diverged or failed trial FAILED with its reason, and the q plot at the end. Every MLflow
    call goes through :mod:`adalase_tune.tracking`."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, base: dict, sites: Sequence[str]):
        super().__init__(
            tracking_uri=tracking_uri,
            experiment_name=experiment,
            tags={"run_kind": "trial", "mlflow.parentRunId": parent_run_id, "sites": ",".join(sites)},
        )
        self.base, self.sites = base, list(sites)
        self.__setstate__(self.__getstate__())

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_tracking", "_trial_runs", "last")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tracking, self._trial_runs, self.last = None, {}, {}

    def setup(self, *args, **kwargs):  # not Ray's: the experiment exists, and no global MLflow state is set
        from .tracking import Tracking

        _LIVE.append(self)
        self._store(lambda: setattr(self, "_tracking", Tracking(self.tracking_uri, self.experiment_name)))

    def _store(self, call) -> None:
        """Every MLflow call of a Tune callback: a store that went away (``StoreUnavailable``) stops
        the sweep gracefully (Tune's SIGUSR1: it saves its state, the trials keep their checkpoints)
        instead of aborting Tune with its tracebacks; the driver then says so in one line. Once the
        store is gone, nothing more is sent to it."""
        from .tracking import StoreUnavailable

        if STORE_LOST:
            return
        try:
            call()
        except StoreUnavailable as err:
            STORE_LOST.append(err)
            import logging
            import signal

            logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # its "stop signal received": not a signal
            if hasattr(signal, "SIGUSR1"):
                os.kill(os.getpid(), signal.SIGUSR1)

    def log_trial_start(self, trial):
        self._store(lambda: self._log_trial_start(trial))

    def log_trial_result(self, iteration, trial, result):
        self._store(lambda: self._log_trial_result(iteration, trial, result))

    def log_trial_end(self, trial, failed=False):
        self._store(lambda: self._log_trial_end(trial, failed))

    def _log_trial_start(self, trial):
        from .tracking import trial_params

        if trial.trial_id in self._trial_runs:
            return
        cfg = trial_config(self.base, trial.config, self.sites)
        params = trial_params(cfg, site_weights(trial.config, self.sites))
        tags = {**self.tags, "method_selection": cfg.selection.method}
        name = f"{cfg.selection.method} seed {cfg.train.seed} {trial.trial_id}"
        self._trial_runs[trial.trial_id] = self._tracking.run_logger(name, tags, params, trial_id=trial.trial_id)

    def _log_trial_result(self, iteration, trial, result):
        from .tracking import epoch_metrics
        from .trainable import ERROR_KEY

        self.last[trial.trial_id] = result
        if ERROR_KEY not in result:
            for epoch in result.get("epochs") or [result]:  # a batch of epochs, or one
                self._trial_runs[trial.trial_id].log_epoch(epoch_metrics(epoch), int(epoch["epoch"]))

    def _log_trial_end(self, trial, failed=False):
        from .tracking import final_metrics
        from .trainable import ERROR_KEY

        run = self._trial_runs.get(trial.trial_id)
        if run is None or run.ended:
            return
        last = self.last.get(trial.trial_id) or trial.last_result or {}
        if failed or ERROR_KEY in last:
            raised = None if ERROR_KEY in last else trial.get_error()
            error = last.get(ERROR_KEY) or (trial_error(raised) if raised else "the trial failed")
            run.fail(" ".join(error.split())[:2000])
            return
        for key in ("node_id", "device", "workers", "threads", "torch"):  # where and how the result was made
            if key in last:
                run.tag(key, str(last[key]))
        q = None
        if f"adalase/q/{self.sites[0]}" in last:
            run.flush()
            q = self._tracking.metric_history(run.run_id, [f"adalase/q/{s}" for s in self.sites])
        run.finish(final_metrics(last), q, self.sites)

    def close(self) -> None:
        """Every run still open ends KILLED (an interrupted sweep), its buffered epochs written; with
        the store gone, none can be, and a resume continues them."""
        from .tracking import StoreUnavailable

        for run in self._trial_runs.values():
            if not run.ended:
                with contextlib.suppress(StoreUnavailable):
                    run.kill()


STORE_LOST: list = []  # the StoreUnavailable that stopped this process's sweep, if one did


def close_open_runs() -> None:
    """KILLED for the open trial runs of every MLflowTrials of this process (after an interrupt)."""
    for callback in _LIVE:
        callback.close()
    _LIVE.clear()


def store_lost():
    """The ``StoreUnavailable`` that stopped the last fit (the MLflow store went away), or None."""
    return STORE_LOST[0] if STORE_LOST else None


class StateGuard(tune.Callback):
    """A guard against a torn experiment state. Ray rewrites ``experiment_state-*.json`` (and the
    searcher's state) in place, so a driver killed at that instant leaves a truncated file and
    ``Tuner.restore`` fails on it. After each step this callback copies the state files, when
    they parse, to ``<experiment>/.adalase_tune_state/``; :func:`repair_state` puts the last good
    copy back before a restore. Local storage only (an object store's upload is atomic)."""

    def __init__(self, root: str, name: str):
        self.folder = None if is_uri(root) else str(Path(root) / name)
        self.seen: dict = {}
        self.hashed: dict = {}  # the pickles' stamps when last hashed (record_pickles)
        self.last = 0.0

    def on_step_end(self, iteration, trials, **info):
        if self.folder is None or time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        snapshot(Path(self.folder), self.seen)
        record_pickles(Path(self.folder), self.hashed)

    def on_experiment_end(self, trials, **info):
        if self.folder is not None:
            snapshot(Path(self.folder), self.seen)
            record_pickles(Path(self.folder), self.hashed)


def _state_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.glob("*")
        if p.is_file() and p.name.startswith(("experiment_state", "searcher-state", "basic-variant-state"))
    ]


def _readable(path: Path) -> bool:
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            import ray.cloudpickle as cloudpickle

            cloudpickle.loads(path.read_bytes())
        return True
    except Exception:
        return False


def snapshot(folder: Path, seen: dict) -> None:
    """Copy every changed, readable state file of ``folder`` into its backup folder (atomically)."""
    if not folder.is_dir():
        return
    backup = folder / STATE_BACKUP
    for path in _state_files(folder):
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if seen.get(path.name) == stamp or not _readable(path):
            continue
        backup.mkdir(exist_ok=True)
        tmp = backup / f".{path.name}.tmp"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, backup / path.name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # the last good copy stays whole
            raise
        seen[path.name] = stamp


DIGESTS = "pickles.json"  # in STATE_BACKUP: sha256 of every pickle Ray wrote during our fits


def _pickles(folder: Path) -> list[Path]:
    """The files of an experiment that ``Tuner.restore`` unpickles (tuner.pkl, searcher states...)."""
    return sorted(p for p in folder.glob("*.pkl") if p.is_file())


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_pickles(folder: Path, seen: dict) -> None:
    """Remember the digest of every pickle in ``folder`` (written by Ray during this process's fit);
    ``seen``: their (mtime, size) when last hashed, so an unchanged file is not read again."""
    if not folder.is_dir():
        return
    pickles = _pickles(folder)
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in pickles}
    if stamps == seen.get("stamps"):
        return
    seen["stamps"] = stamps
    digests = {p.name: _sha256(p) for p in pickles}
    backup = folder / STATE_BACKUP
    backup.mkdir(exist_ok=True)
    tmp = backup / f".{DIGESTS}.tmp"
    tmp.write_text(json.dumps(digests, sort_keys=True))
    os.replace(tmp, backup / DIGESTS)


def check_pickles(root: str, name: str) -> None:
    """Before ``--resume`` lets Ray unpickle an experiment's state (and a pickle runs code as it
    loads): the folder and its pickles must be this user's and writable by no one else, and
    every pickle must be the one adalase-tune saw Ray write. Local storage only (a bucket's
    access is the bucket's policy: SECURITY.md)."""
    if is_uri(root):
        return
    folder = Path(root) / name
    fix = "resume only from a folder that only you can write, or start the sweep again under another --name"
    for path in [folder, *_pickles(folder)]:
        st = path.stat()
        if st.st_uid not in (os.getuid(), 0):
            raise ConfigError(
                f"--resume: {path} belongs to another user (uid {st.st_uid}); Ray would unpickle it. {fix}"
            )
        if st.st_mode & 0o022:
            raise ConfigError(
                f"--resume: {path} can be written by others (mode {st.st_mode & 0o777:o}), and Ray unpickles "
                f"what it holds, which can run code as you. {fix}"
            )
    recorded = folder / STATE_BACKUP / DIGESTS
    if not recorded.is_file():
        return  # an experiment of an earlier version (nothing recorded to compare with)
    known = json.loads(recorded.read_text())
    for path in _pickles(folder):
        if known.get(path.name) != _sha256(path):
            raise ConfigError(
                f"--resume: {path} is not the file Ray wrote during this experiment (its sha256 differs from the "
                f"one recorded in {recorded}); Ray would unpickle it, which can run code. If you trust it, delete "
                f"{recorded}; else {fix}"
            )


def repair_state(root: str, name: str) -> list[str]:
    """Before a restore: replace every unreadable state file by its last good copy."""
    if is_uri(root):
        return []
    folder = Path(root) / name
    backup = folder / STATE_BACKUP
    repaired = []
    for path in _state_files(folder):
        good = backup / path.name
        if not _readable(path) and good.is_file():
            shutil.copyfile(good, path)
            repaired.append(path.name)
    if repaired:
        print(
            f"  {name}: restored {', '.join(repaired)} from the last good copy (the driver was killed while "
            "Ray wrote it); trials resume from their latest checkpoints",
            file=sys.stderr,
        )
    return repaired


def repair_checkpoints(root: str, name: str) -> list[str]:
    """Before a restore: point every trial whose recorded latest checkpoint no longer exists at the
    newest checkpoint of that trial still on storage (or at none: the trial starts over).

    Ray deletes a trial's old checkpoints (``num_to_keep``) as new ones arrive, and saves its
    experiment state separately; on cloud storage the state's upload lags. A driver killed in
    between leaves a state whose latest checkpoint is gone, and Tune's restore of that trial fails.
    Returns the ids of the trials it repointed."""
    import pyarrow.fs as pafs
    import ray.cloudpickle as cloudpickle
    from ray.train._internal.session import _TrainingResult

    fs, folder = (
        pafs.FileSystem.from_uri(join(root, name)) if is_uri(root) else (pafs.LocalFileSystem(), join(root, name))
    )
    listing = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    states = sorted(
        f.path for f in listing if f.base_name.startswith("experiment_state") and f.base_name.endswith(".json")
    )
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as f:
        data = json.loads(f.read().decode())
    repointed = []
    for entry in data.get("trial_data", []):
        meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
        blob = meta.get("checkpoint_manager")
        if not (isinstance(blob, dict) and "value" in blob):
            continue
        manager = cloudpickle.loads(bytes.fromhex(blob["value"]))
        latest = manager.latest_checkpoint_result
        if latest is None or _exists(latest.checkpoint):
            continue
        ckpt = latest.checkpoint
        trial_dir = ckpt.path.rstrip("/").rsplit("/", 1)[0]
        found = ckpt.filesystem.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        newest = sorted(
            f.path for f in found if f.base_name.startswith("checkpoint_") and f.type == pafs.FileType.Directory
        )
        manager._checkpoint_results = [
            r for r in manager._checkpoint_results if r.checkpoint is not None and _exists(r.checkpoint)
        ]
        manager._latest_checkpoint_result = None
        if newest:
            result = _TrainingResult(checkpoint=type(ckpt)(newest[-1], ckpt.filesystem), metrics=dict(latest.metrics))
            manager._latest_checkpoint_result = result
            if newest[-1] not in {r.checkpoint.path for r in manager._checkpoint_results}:
                manager._checkpoint_results.append(result)
        blob["value"] = cloudpickle.dumps(manager).hex()
        entry[1] = json.dumps(meta) if isinstance(entry[1], str) else meta
        repointed.append(ckpt.path.rstrip("/").rsplit("/", 2)[-2])
    if repointed:
        with fs.open_output_stream(states[-1]) as f:
            f.write(json.dumps(data).encode())
        print(
            f"  {name}: {len(repointed)} trial(s) recorded a checkpoint that Ray had already deleted when the "
            "driver was killed; they resume from their newest checkpoint on storage",
            file=sys.stderr,
        )
    return repointed


def _exists(checkpoint) -> bool:
    import pyarrow.fs as pafs

    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound
