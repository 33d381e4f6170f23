"""The library API: one function per command; ``adalase-tune`` only parses arguments for them.

From Python they give exactly what the command line gives: the MLflow run tree, the files and
the report. Everything that can be checked is checked before any work starts (the config, the
data, the names, the paths, the storage, the tracking URI, the scheduler budgets and, for a
resume, that the config is the one the experiment was started with); a failure raises
:class:`~adalase_tune.config.ConfigError` and has created nothing. An interrupt (SIGINT or
SIGTERM) stops the work, ends every MLflow run it touched KILLED and raises :class:`Interrupted`,
whose message says what finished and how to resume.

Example::

    from adalase_tune import load_config, run_benchmark
    result = run_benchmark(load_config("search_spaces/motifs.yaml"), methods=["adalase", "grid"],
                           out="results/mini", tracking_uri="sqlite:///mlflow.db", experiment="motifs")
    print(result.table)
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import pandas as pd

from . import keys
from .arms import arm_names, ops_text
from .checkpoint import StorageError, atomic_write
from .config import ConfigError, ExperimentConfig, describe_differences, differing_keys
from .data import DataBundle, build_data
from .data._stream import UnreadableImage
from .interrupts import Interrupted, Signals
from .paths import check_dir, check_file
from .sites import sites_of

if TYPE_CHECKING:
    from .engine import Trainer
    from .tracking import Tracking
    from .tuning import Job, SweepOptions

_R = TypeVar("_R")


class TrialsFailed(RuntimeError):
    """Trials failed: they raised in their worker (after ``max_failures`` restarts) or diverged.

    ``reasons`` maps ``"<method> <trial id>"`` to each failed trial's one-line reason; ``result`` is
    what the call returns with ``tolerate_failures=True`` (a SweepResult or a BenchmarkResult: the
    rows, the files). The message is one line. Trials that ASHA or PBT stopped early are not failures.
    """

    def __init__(self, reasons: dict, total: int, result: Any):
        self.reasons, self.total, self.result = reasons, total, result
        distinct = set(reasons.values())
        first = next(iter(reasons))
        detail = f"all with {distinct.pop()}" if len(distinct) == 1 else f"first {first}: {reasons[first]}"
        super().__init__(f"{len(reasons)} of {total} trials failed, {detail}")


def check_failures(rows: pd.DataFrame, result: _R, tolerate: bool) -> _R:
    """``result``, or :class:`TrialsFailed` when a row is an error and failures are not tolerated."""
    failed = rows[rows["status"] == "ERROR"] if len(rows) else rows
    if tolerate or not len(failed):
        return result
    reasons = {f"{r['method']} {r['trial_id']}": r["error"] for r in failed.to_dict("records")}
    raise TrialsFailed(reasons, len(rows), result)


# --- shared preparation ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything a sweep or a benchmark checked and built before any work."""

    cfg: ExperimentConfig
    data: Optional[DataBundle]  # None when every node reads the data itself (data.read_on_nodes)
    sites: list
    splits: dict
    plain_passes: int
    jobs: dict  # method -> [tuning.Job]
    root: str
    name: str
    data_ref: object = None  # the data in the Ray object store, once Ray runs
    lock: Any = None  # the locks.ExperimentLock held for the whole sweep or benchmark


def parse_methods(text: Optional[str], configured: Optional[Sequence[str]] = None) -> list[str]:
    """``"adalase,grid"`` -> checked list; every name is checked before anything runs. Without
    ``text``: ``configured`` (the YAML's ``sweep.methods``), else every registered method."""
    from .search import METHODS

    names = (
        [m.strip() for m in text.split(",") if m.strip()] if text is not None else list(configured or METHODS.names())
    )
    if not names:
        raise ConfigError("--methods is empty; give e.g. --methods adalase,uniform,grid")
    for name in names:
        try:
            METHODS.get(name)
        except ConfigError as err:  # the registry speaks of one --method; here they are a list
            raise ConfigError(str(err).replace("--method = ", "--methods: ", 1)) from None
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods = {','.join(names)}: a method is listed twice")
    return names


def prepare(
    cfg: ExperimentConfig, methods: Sequence[str], options: SweepOptions, name: str, job_name: Callable[[str], str]
) -> Prepared:
    """Every check of a sweep or a benchmark that needs no Ray, and the data, built once."""
    from .distributed import World
    from .locks import ExperimentLock
    from .tuning import check_name, check_workers, plan_jobs, storage_root

    check_name(name)
    held = max(1.0, options.cpus_per_trial)
    if cfg.train.threads > held:
        raise ConfigError(
            f"train.threads = {cfg.train.threads}, but --cpus-per-trial = {options.cpus_per_trial:g}: each trial "
            f"would run more threads than the CPUs Ray holds for it; set --cpus-per-trial {cfg.train.threads} "
            f"or train.threads={int(held)}"
        )
    cfg = cfg.with_absolute_paths()
    data = build_data(cfg.data)
    sites = arms_of(cfg, data)  # what the searches weigh
    from .engine import Trainer

    learns = any(m.startswith("adalase") for m in methods)
    for method in {"adalase" if learns else cfg.selection.method}:  # policy, op, holdout: checked
        world = World(0, options.workers_per_trial)  # batches that every worker gets a share of
        Trainer(cfg.replace(**{"selection.method": method, "train.device": "cpu"}), data=data, world=world)
    jobs = {m: plan_jobs(m, options, sites, job_name(m)) for m in methods}
    for job in (j for js in jobs.values() for j in js):
        job.plan.check_epochs(cfg.train.epochs)
        check_workers(job, options)
    root = storage_root(options.storage)
    first = next(iter(jobs.values()))[0].name
    # one writer per experiment, before what exists is looked at: a second one is refused here
    lock = ExperimentLock(root, [j.name for js in jobs.values() for j in js]).acquire()
    try:
        _check_existing(cfg, jobs, options, root, name, first)
    except BaseException:
        lock.release()
        raise
    return Prepared(
        cfg,
        None if cfg.data.read_on_nodes else data,
        sites,
        split_sizes(data),
        cfg.train.epochs * len(data.train),
        jobs,
        root,
        name,
        lock=lock,
    )


def _check_existing(cfg: ExperimentConfig, jobs: dict, options: SweepOptions, root: str, name: str, first: str) -> None:
    from .tuning import check_pickles, experiment_exists, load_meta

    for method_jobs in jobs.values():
        for job in method_jobs:
            exists = experiment_exists(root, job.name)
            if exists and not options.resume:
                raise ConfigError(
                    f"--name = {name!r}: an experiment {job.name!r} already exists in {root}; pass "
                    "--resume to continue it, or choose another --name"
                )
            per_seed = [f"{job.name}-seed{s}" for s in options.seeds]  # where optuna and asha ran, per seed, before
            if options.resume and not exists and any(experiment_exists(root, old) for old in per_seed):
                raise ConfigError(
                    f"--resume: {job.name!r} was started by an earlier adalase-tune, which ran one Tuner per "
                    f"seed ({job.name}-seed<N> in {root}); this version runs the seeds of that method in one "
                    "Tuner. Finish it with the version that started it, or start it again under another --name"
                )
            meta = load_meta(root, job.name) if exists else None
            if exists:
                check_pickles(root, job.name)  # before Ray ever unpickles the experiment's state
            if meta is not None:
                diff = differing_keys(meta["config"], cfg.to_dict())
                if diff:
                    raise ConfigError(
                        f"--resume: {job.name!r} was started with another config "
                        f"({describe_differences(meta['config'], cfg.to_dict(), diff)}); "
                        "resume with the same config and --set flags"
                    )
    if options.resume and not experiment_exists(root, first):
        raise ConfigError(
            f"--resume: no experiment {first!r} in {root} to continue; drop --resume to start it, or "
            "give the --name and --storage it was started with"
        )


def arms_of(cfg: ExperimentConfig, data: Optional[DataBundle] = None) -> list[str]:
    """The arms the searches weigh: the model's sites, or its (site, op) pairs (docs/joint.md)."""
    from .models import build_model

    data = data or build_data(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    return arm_names([s.name for s in sites_of(model)], cfg.augment)


def split_sizes(data: DataBundle) -> dict:
    return {"train": len(data.train), "val": len(data.val), "test": len(data.test)}


def _tracking(
    tracking_uri: Optional[str], experiment: Optional[str], default_experiment: str, parent_run_id: Optional[str] = None
) -> Optional[Callable[[], Tracking]]:
    """A factory of the :class:`Tracking` handle (created once the checks passed), or None. The
    runs nest under ``parent_run_id``, else under the caller's active MLflow run, if any."""
    from .tracking import Tracking, check_tracking_uri, default_uri, parent_of

    if tracking_uri is None:
        if parent_run_id is not None:
            raise ConfigError("--parent-run-id needs tracking; drop --no-tracking (tracking_uri=None)")
        return None
    tracking_uri = check_tracking_uri(default_uri(tracking_uri))
    parent = parent_of(tracking_uri, parent_run_id)
    if parent is not None and experiment not in (None, parent[1]):
        raise ConfigError(
            f"--experiment = {experiment!r}, but the parent run {parent[0]} is in experiment {parent[1]!r}, and "
            f"MLflow's UI nests runs within one experiment only; pass --experiment {parent[1]!r} or leave it out"
        )
    name = parent[1] if parent is not None else experiment or default_experiment
    return lambda: Tracking(tracking_uri, name, parent_run_id=parent[0] if parent else None)


def _parent_params(cfg: ExperimentConfig, plain_passes: int, splits: dict) -> dict:
    from .tracking import augment_params

    return {
        "plain_passes": plain_passes,
        "epochs": cfg.train.epochs,
        "data.name": cfg.data.name,
        "data.n_train": splits["train"],
        "data.n_val": splits["val"],
        "data.n_test": splits["test"],
        "model.name": cfg.model.name,
        **augment_params(cfg),  # as each trial run logs it
    }


@dataclass
class MethodResult:
    method: str
    rows: list
    interrupted: bool
    parent: Optional[str] = None  # its MLflow parent run


def _run_method(
    prep: Prepared,
    method: str,
    options: SweepOptions,
    tracking: Optional[Tracking],
    signals: Signals,
    cfg_hash: str,
    extra_callbacks: Sequence = (),
) -> MethodResult:
    """Run one method's Tuners with driver-side tracking; its parent run ends FINISHED, FAILED
    (a trial failed) or KILLED (interrupted)."""
    from . import tuning
    from .locks import lock_path
    from .tracking import trials

    parent = None
    if tracking is not None:
        parent = tracking.parent_run(
            method,
            prep.name,
            cfg_hash,
            _parent_params(prep.cfg, prep.plain_passes, prep.splits),
            {
                "seeds": ",".join(map(str, options.seeds)),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "methods": ",".join(prep.jobs),  # every method of the run, and the lock its writer holds:
                "lock": str(lock_path(prep.root, prep.jobs[method][0].name)),  # the report tells PARTIAL
            },
        )

    def callbacks_for(job: Job) -> list:
        callbacks = [tuning.TrialProgress(job.name, job.plan.expected_trials), *extra_callbacks]
        if tracking is not None and parent is not None:  # parent: set whenever tracking is
            callbacks.append(
                trials.MLflowTrials(tracking.uri, tracking.experiment, parent, prep.cfg.to_dict(), prep.sites)
            )
        return callbacks

    rows, interrupted = [], False
    try:
        for job in prep.jobs[method]:
            if signals.received:  # a signal between two Tuners: stop here
                interrupted = True
                break
            with signals.fitting():
                grid = tuning.fit(prep.cfg, job, options, prep.root, prep.sites, callbacks_for(job), prep.data_ref)
            rows += trials.trial_rows(grid, method, prep.sites)
            lost = trials.lost_store()
            if lost is not None:  # the MLflow store went away: Tune stopped, its state saved
                raise lost
            if tracking is not None:  # runs the store could not end before (a resume after it went away)
                trials.settle_runs(grid, tracking, parent, prep.cfg.to_dict(), prep.sites)
            # fewer trials than planned: Tune took a Ctrl-C before it made them (its handler, not ours)
            if tuning.unfinished(grid) or len(grid) < job.plan.expected_trials or signals.received:
                interrupted = True
                break
    except BaseException as err:
        from .tracking import StoreUnavailable

        trials.close_open_runs()
        if tracking is not None and parent is not None:
            status = "KILLED" if isinstance(err, (KeyboardInterrupt, StoreUnavailable)) else "FAILED"
            with contextlib.suppress(StoreUnavailable):  # a store that is gone cannot take it
                tracking.end_run(parent, status, error="" if status == "KILLED" else f"{type(err).__name__}: {err}")
        raise
    if tracking is not None and parent is not None:
        trials.close_open_runs()
        failed = [r for r in rows if r["status"] == "ERROR"]
        status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
        error = (
            f"{len(failed)} of {len(rows)} trials failed; first: {failed[0]['error']}"
            if failed and not interrupted
            else ""
        )
        tracking.end_run(parent, status, method_totals(pd.DataFrame(rows), prep.plain_passes), error)
    return MethodResult(method, rows, interrupted, parent)


def method_totals(rows: pd.DataFrame, plain_passes: float) -> dict:
    """A method's totals for its MLflow parent run."""
    from .report import method_table

    table, _ = method_table(rows, plain_passes)
    if not len(table):
        return {}
    t = table.iloc[0]
    return {
        keys.COST_TOTAL_DEVICE_S: float(rows["device_s"].sum()),
        keys.COST_TOTAL_SAMPLE_PASSES: float(rows["sample_passes"].sum()),
        **shown({k: t[v] for v, k in COMPARISON.items() if k in COMPARED}),
    }


def shown(metrics: dict) -> dict:
    """The comparison's metrics rounded to 4 places, as the UI's table shows them whole."""
    return {k: round(float(v), 4) for k, v in metrics.items()}


def _start_ray(prep: Prepared, options: SweepOptions, signals: Signals) -> None:
    from . import tuning

    tuning.connect(options.address, timeout_s=options.connect_timeout_s)
    signals.reclaim()
    if signals.received:
        raise KeyboardInterrupt  # nothing ran yet
    tuning.check_resources(options)
    tuning.make_storage(prep.root)
    for method, jobs in prep.jobs.items():  # every Tuner registered up front: any interrupt can be resumed
        for job in jobs:
            tuning.save_meta(prep.root, job.name, {"config": prep.cfg.to_dict(), "method": method, "sites": prep.sites})
    prep.data_ref = tuning.put(prep.data) if prep.data is not None else None


def start_hint(resume_hint: str) -> str:
    """The command that starts the work again: the resume command without ``--resume``."""
    return resume_hint.removesuffix(" --resume") if resume_hint.endswith(" --resume") else "the same call again"


@contextlib.contextmanager
def _forced(signals: Signals, resume_hint: str, prep: Optional[Prepared] = None) -> Iterator[None]:
    """A KeyboardInterrupt that got through (a second signal, or one outside Tune): Interrupted. When
    nothing was saved yet (a signal while Ray starts), there is nothing to resume: it says how to start."""
    from .tuning import experiment_exists

    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        if prep is not None and not any(experiment_exists(prep.root, j.name) for js in prep.jobs.values() for j in js):
            raise Interrupted(
                signals.signum(),
                f"interrupted before anything was saved (no trial started, no MLflow run); start it again with: "
                f"{start_hint(resume_hint)}",
            ) from None
        raise Interrupted(
            signals.signum(),
            f"interrupted; the MLflow runs left open are KILLED and no report was written. Resume with: {resume_hint}",
        ) from None


@contextlib.contextmanager
def _store_gone(prep: Prepared, what: str, resume_hint: str) -> Iterator[None]:
    """The MLflow store went away during a sweep or a benchmark: Tune was stopped gracefully (its
    state and the trials' checkpoints are kept), and this is one line with the resume command."""
    from .tracking import StoreUnavailable

    try:
        yield
    except StoreUnavailable as err:
        raise StoreUnavailable(
            err.errno,
            f"{err}; the {what} stopped (Ray Tune saved its state and the trials' checkpoints in {prep.root}); "
            "the MLflow runs still open could not be closed there; once the store is back (or to log into a new "
            f"one). Resume with: {resume_hint}",
        ) from None
    except StorageError as err:  # --storage (or --out) full: the trials' last whole checkpoints are kept
        raise StorageError(
            err.errno,
            f"{err}; the {what} stopped; Ray Tune's state and each trial's last whole checkpoint are kept; the "
            f"MLflow runs are closed (FAILED, KILLED); free space, then Resume with: {resume_hint}",
        ) from None


def _interrupted(signals: Signals, done: list[MethodResult], total: int, resume_hint: str) -> Interrupted:
    finished = sum(r["status"] == "TERMINATED" for m in done for r in m.rows)
    return Interrupted(
        signals.signum(),
        f"interrupted: {finished} of {total} trials had finished; the MLflow runs "
        f"left open are KILLED. Resume with: {resume_hint}",
    )


# --- the commands -------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    rows: pd.DataFrame
    name: str
    root: str


def sweep(
    cfg: ExperimentConfig,
    method: str,
    options: Optional[SweepOptions] = None,
    *,
    out: Optional[str] = None,
    tracking_uri: Optional[str] = "default",
    experiment: Optional[str] = None,
    resume_hint: str = "the same call with resume=True",
    callbacks: Sequence = (),
    tolerate_failures: bool = False,
    parent_run_id: Optional[str] = None,
) -> SweepResult:
    """Run one search method on Ray Tune; with tracking, a parent run for the method and a child
    run per trial. ``out``: also write results.csv there. ``callbacks``: more Ray Tune callbacks.
    A failed trial raises :class:`TrialsFailed` (after results.csv is written) unless
    ``tolerate_failures``. The runs nest under ``parent_run_id``, else the active MLflow run, if any."""
    from .tuning import SweepOptions

    options = options or SweepOptions()
    name = options.name or method
    if out is not None:
        check_dir(out, "--out")
    open_tracking = _tracking(tracking_uri, experiment, name, parent_run_id)
    prep = prepare(cfg, [method], options, name, lambda m: name)
    signals = Signals()
    with prep.lock, signals.installed(), _forced(signals, resume_hint, prep), _store_gone(prep, "sweep", resume_hint):
        _start_ray(prep, options, signals)
        tracking = open_tracking() if open_tracking else None
        from .tracking import config_hash

        result = _run_method(prep, method, options, tracking, signals, config_hash(prep.cfg), callbacks)
    rows = pd.DataFrame(result.rows)
    if out:
        atomic_write(Path(out) / "results.csv", rows.to_csv(index=False))
    if result.interrupted:
        raise _interrupted(signals, [result], sum(j.plan.expected_trials for j in prep.jobs[method]), resume_hint)
    return check_failures(rows, SweepResult(rows, name, prep.root), tolerate_failures)


@dataclass
class BenchmarkResult:
    table: pd.DataFrame
    trials: pd.DataFrame
    files: dict
    name: str
    sites: list
    plain_passes: int


def run_benchmark(
    cfg: ExperimentConfig,
    methods: Optional[Sequence[str]] = None,
    options: Optional[SweepOptions] = None,
    *,
    out: str = "results",
    tracking_uri: Optional[str] = "default",
    experiment: Optional[str] = None,
    resume_hint: str = "the same call with resume=True",
    callbacks: Sequence = (),
    known: Optional[str] = None,
    tolerate_failures: bool = False,
    parent_run_id: Optional[str] = None,
) -> BenchmarkResult:
    """Several methods on the same data, model, epochs and seeds, in one Ray session: one MLflow
    parent run per method, a child per trial, a summary run with the report; the comparison files
    in ``out`` (results.csv, report.md, the plots). An interrupted benchmark writes a report
    marked PARTIAL before raising :class:`Interrupted`. ``known``: the site (or ``site/op`` pair)
    known to be right by construction, for the report's "which arm does each method favour". A
    failed trial raises :class:`TrialsFailed` once the report is written, unless ``tolerate_failures``.
    The runs nest under ``parent_run_id``, else under the active MLflow run, if any; each method's
    parent run gets the comparison metrics and the summary run the table (``comparison.json``)."""
    from .report import write_report
    from .tuning import SweepOptions

    options = options or SweepOptions()
    methods = parse_methods(",".join(methods) if methods else None)
    name = options.name or f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    options = replace(options, name=name)
    if out is not None:
        check_dir(out, "--out")
    open_tracking = _tracking(tracking_uri, experiment, "adalase_tune", parent_run_id)
    prep = prepare(cfg, methods, options, name, lambda m: f"{name}-{m}")
    signals = Signals()
    started = time.time()
    done: list[MethodResult] = []
    gone = _store_gone(prep, "benchmark (no report was written)", resume_hint)
    with prep.lock, signals.installed(), _forced(signals, resume_hint, prep), gone:
        _start_ray(prep, options, signals)
        tracking = open_tracking() if open_tracking else None
        from .tracking import config_hash

        for i, method in enumerate(methods, 1):
            if signals.received:  # a signal between two methods: the rest are not run
                break
            print(
                f"[{i}/{len(methods)}] {method}: running ({time.time() - started:.0f}s elapsed)",
                file=sys.stderr,
                flush=True,
            )
            try:
                result = _run_method(prep, method, options, tracking, signals, config_hash(prep.cfg), callbacks)
            except KeyboardInterrupt:  # outside Tune's graceful stop: its runs are closed; report what ran
                done.append(MethodResult(method, [], True))
                break
            done.append(result)
            ok = [r for r in result.rows if r["status"] == "TERMINATED"]
            best = max((r["best_val_acc"] for r in ok), default=float("nan"))
            print(
                f"[{i}/{len(methods)}] {method}: {len(ok)}/{len(result.rows)} trials done, best val acc {best:.4f}",
                file=sys.stderr,
                flush=True,
            )
            if result.interrupted:
                break
        trials = pd.DataFrame([r for m in done for r in m.rows])
        partial = len(done) < len(methods) or any(m.interrupted for m in done)
        meta = benchmark_meta(prep, methods, options, started, done if partial else None)
        if known is not None and known not in prep.sites:
            raise ConfigError(f"known = {known!r}: not one of {', '.join(prep.sites)}")
        files = write_report(trials, out, prep.plain_passes, meta, known=known)
        if tracking is not None:
            _log_comparison(tracking, done, files["table"], trials, known)
            tracking.summary_run(
                name,
                [files[k] for k in ("csv", "md", "png", "curve_png", "joint_png") if k in files],
                {"plain_passes": prep.plain_passes},
                tags={"partial": str(partial).lower()},
                table=comparison_table(files["table"], trials, known),
            )
    if partial:
        raise _interrupted(
            signals, done, sum(j.plan.expected_trials for js in prep.jobs.values() for j in js), resume_hint
        )
    benchmark = BenchmarkResult(files["table"], trials, files, name, prep.sites, prep.plain_passes)
    return check_failures(trials, benchmark, tolerate_failures)


COMPARISON = {  # the report's method table -> the comparison's columns (as in MLflow), in the UI's order
    "method": "method",
    "test_acc": "test_acc_selected",
    "test_acc_std": "test_acc_selected_std",
    "plain_run_multiple": keys.COST_PLAIN_RUN_MULTIPLE,
    "best_val_acc": "best_val_acc",
    "plain_run_multiple_device": keys.COST_PLAIN_RUN_MULTIPLE_DEVICE,
    "seeds": "seeds",
    "trials": "trials",
    "failed": "failed",
}


COMPARED = (  # the comparison's metrics on a method's parent run
    "test_acc_selected",
    "test_acc_selected_std",
    "best_val_acc",
    keys.COST_PLAIN_RUN_MULTIPLE,
    keys.COST_PLAIN_RUN_MULTIPLE_DEVICE,
    "answer_found",
)


def answer_found(trials: pd.DataFrame, table: pd.DataFrame, known: Optional[str]) -> tuple[Optional[str], dict]:
    """(the target arm, {method: share of its seeds whose selected configuration weights the target
    most}): the target is the ``known`` arm, else the grid's best arm on val, as in the report."""
    from .report import arm_finding, grid_by_site, sites_of

    arms = sites_of(trials)
    grid = grid_by_site(trials, arms) if arms and known is None else None
    target = known or (str(grid["val"].idxmax()) if grid is not None and len(grid) == len(arms) else None)
    if target is None or target not in arms or not len(table):
        return None, {}
    return target, {f["method"]: f["found"] / f["seeds"] for f in arm_finding(trials, arms, table, target)}


def comparison_table(table: pd.DataFrame, trials: pd.DataFrame, known: Optional[str]) -> pd.DataFrame:
    """One row per method: test accuracy at the selected configuration, cost in plain runs, and
    ``answer_found`` where there is a target arm."""
    if not len(table):
        return pd.DataFrame(columns=list(COMPARISON.values()))
    out = table[list(COMPARISON)].rename(columns=COMPARISON).round(4)
    target, found = answer_found(trials, table, known)
    if target is not None:  # beside the cost
        out.insert(4, "answer_found", [round(found[m], 4) if m in found else float("nan") for m in out["method"]])
    return out


def _log_comparison(
    tracking: Tracking, done: list[MethodResult], table: pd.DataFrame, trials: pd.DataFrame, known: Optional[str]
) -> None:
    """Each method's parent run gets its row of the comparison as metrics (and the target arm as tags)."""
    rows = {r["method"]: r for r in comparison_table(table, trials, known).to_dict("records")}
    target, _ = answer_found(trials, table, known)
    tags = {"answer_target": target, "answer_source": "known" if known else "grid"} if target else {}
    for m in done:
        if m.parent is not None and m.method in rows:
            tracking.log_comparison(
                m.parent, shown({k: rows[m.method][k] for k in COMPARED if k in rows[m.method]}), tags
            )


def benchmark_meta(
    prep: Prepared, methods: Sequence[str], options: SweepOptions, started: float, partial: Optional[list]
) -> dict:
    cfg = prep.cfg
    meta: dict[str, object] = {"title": f"AdaLASE against the baselines: {cfg.model.name} on {cfg.data.name}"}
    if partial is not None:
        ran = ", ".join(f"{m.method}{' (interrupted)' if m.interrupted else ''}" for m in partial)
        meta["PARTIAL"] = (
            f"interrupted; methods run: {ran or 'none'}; not run: {', '.join(methods[len(partial) :]) or 'none'}"
        )
    meta.update(
        {
            "data": f"{cfg.data.name}, classes={list(cfg.data.classes) if cfg.data.classes else 'all'}",
            "splits": f"train {prep.splits['train']}, val {prep.splits['val']}, test {prep.splits['test']} samples",
            "model": cfg.model.name,
            "op": ops_text(cfg.augment),
            "epochs": cfg.train.epochs,
            "seeds": list(options.seeds),
            "methods": ", ".join(methods),
            "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
            "wall time": f"{time.time() - started:.0f}s",
        }
    )
    return meta


def train(
    cfg: ExperimentConfig,
    *,
    out: Optional[str] = None,
    save_model: Optional[str] = None,
    checkpoint_dir: Optional[str] = None,
    resume: bool = False,
    tracking_uri: Optional[str] = "default",
    experiment: Optional[str] = None,
    progress: bool = True,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    parent_run_id: Optional[str] = None,
) -> dict:
    """Train one network. Its MLflow run nests under ``parent_run_id``, else under the caller's
    active MLflow run, if any. ``checkpoint_dir``: write ``last.pt`` after every epoch; ``resume``:
    continue from it, and continue its MLflow run. ``workers > 1``: a data-parallel Ray Train run
    on a private local Ray (see :func:`_train_workers`). Returns the summary."""
    from .engine import Callback, CheckpointDir, ProgressBar, Trainer

    if resume and not checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir DIR (the folder holding last.pt)")
    if workers < 1:
        raise ConfigError(f"--workers = {workers}: it must be >= 1")
    for path, flag in ((out, "--out"), (save_model, "--save-model")):
        if path is not None:
            check_file(path, flag)
    if checkpoint_dir:
        check_dir(checkpoint_dir, "--checkpoint-dir")
    open_tracking = _tracking(tracking_uri, experiment, "train", parent_run_id)
    if workers > 1:
        summary, trainer = _train_workers(
            cfg, workers, gpus_per_worker, checkpoint_dir, resume, open_tracking, progress
        )
        _write_outputs(summary, trainer, cfg, out, save_model)
        return summary
    ckpt = CheckpointDir(checkpoint_dir, resume) if checkpoint_dir else None
    trainer = Trainer(cfg)  # every check of the config against the data and the model happens here
    callbacks: list[Callback] = [ProgressBar()] if progress else []
    if open_tracking:
        from .tracking.train_run import TrainRun

        callbacks.append(TrainRun(open_tracking()))
    if ckpt is not None:
        callbacks.append(ckpt)  # after tracking: an epoch is logged before its checkpoint commits it
    trainer.callbacks = callbacks
    if ckpt is not None and ckpt.restore(trainer):
        print(f"resuming {ckpt.path} after epoch {trainer.epoch}", file=sys.stderr)
    if progress:
        sites = ", ".join(f"{i}:{s.name}{list(s.shape)}" for i, s in enumerate(trainer.sites))
        sizes = trainer.split_sizes()
        n_train = len(trainer.all_data.train)
        held = (
            f"; AdaLASE trains on {sizes['train']}, holding {n_train - sizes['train']} out"
            if sizes["train"] < n_train
            else ""
        )
        p = trainer.probe_epochs
        form = f" (a probe of {p} epoch{'s' * (p != 1)}, then the retrain on all {n_train})" if p else ""
        print(
            f"{cfg.model.name} on {cfg.data.name} (train {n_train}, val {sizes['val']}, test {sizes['test']}{held}), "
            f"{cfg.selection.method}{form}, op {ops_text(cfg.augment)}, device {trainer.device}; sites {sites}",
            file=sys.stderr,
        )
    signals = Signals(deferred=False)
    with signals.installed():
        try:
            summary = trainer.run()
        except KeyboardInterrupt:
            hint = (
                f"rerun with --checkpoint-dir {checkpoint_dir} --resume"
                if checkpoint_dir
                else "rerun with --checkpoint-dir DIR to be able to resume"
            )
            raise Interrupted(
                signals.signum(), f"interrupted after epoch {trainer.epoch}; the MLflow run is KILLED. {hint}"
            ) from None
        except UnreadableImage as err:  # a streamed image that decodes only in part: the exact resume
            again = f"--checkpoint-dir {checkpoint_dir} --resume" if checkpoint_dir else None
            raise UnreadableImage(err.path, err.reason, again) from None
        except StorageError as err:  # a full disk under --checkpoint-dir: what is kept, and how to go on
            kept = (
                f"{ckpt.path.name} keeps the last epoch it saved; free space, then rerun with --checkpoint-dir "
                f"{checkpoint_dir} --resume"
                if ckpt is not None
                else "free space and rerun"
            )
            raise StorageError(err.errno, f"{err}; the MLflow run is FAILED; {kept}") from None
    try:
        _write_outputs(summary, trainer, cfg, out, save_model)
    except StorageError as err:
        raise StorageError(err.errno, f"{err}; the run itself finished (its MLflow run is complete)") from None
    return summary


def _in_thread(fn: Callable[[], _R]) -> _R:
    """``fn()`` in a daemon thread, waited for here (a signal interrupts the wait, not the thread)."""
    import threading

    out: dict = {}

    def call() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # handed to the caller
            out["error"] = err

    thread = threading.Thread(target=call, daemon=True, name="adalase-train-workers")
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in out:
        raise out["error"]
    return out["value"]


def _write_outputs(
    summary: dict, trainer: Trainer, cfg: ExperimentConfig, out: Optional[str], save_model: Optional[str]
) -> None:
    if save_model:
        from .models import save_model as write_model

        write_model(trainer.model, save_model, cfg.to_dict())
    if out:
        atomic_write(out, json.dumps(summary, indent=2))


TRAIN_RUN = "train"  # the Ray Train run's name inside --checkpoint-dir


def _train_workers(
    cfg: ExperimentConfig,
    workers: int,
    gpus: float,
    checkpoint_dir: Optional[str],
    resume: bool,
    open_tracking: Optional[Callable[[], Tracking]],
    progress: bool,
) -> tuple[dict, Trainer]:
    """``train --workers N``: N data-parallel workers (one CPU each, ``gpus`` GPUs each) as one Ray
    Train run on a private local Ray. Its checkpoints are Ray Train's, in ``checkpoint_dir/train``
    (a temporary folder without ``--checkpoint-dir``); ``--resume`` continues from the latest. The
    MLflow run is written when training ends, from the run's history."""
    import tempfile

    from . import tuning
    from .checkpoint import safe_load
    from .distributed import World
    from .engine import Trainer
    from .trainable import STATE_FILE, run_data_parallel

    data = build_data(cfg.data)
    trainer = Trainer(cfg, data=data)  # every check of the config against the data and the model, before Ray starts
    World(0, workers).check_batches(len(trainer.data.train), cfg.train.batch_size)
    run_dir = Path(checkpoint_dir, TRAIN_RUN) if checkpoint_dir else None
    if run_dir is not None and run_dir.exists() and not resume:
        raise ConfigError(
            f"--checkpoint-dir = {checkpoint_dir!r} already holds a run ({run_dir}); add --resume to "
            "continue it, or choose another folder"
        )
    scratch = None if checkpoint_dir else tempfile.TemporaryDirectory(prefix="adalase-train-")
    storage = str(Path(checkpoint_dir or scratch.name).resolve())  # type: ignore[union-attr]
    tuning.connect(None)
    tuning.check_resources(tuning.SweepOptions(cpus_per_trial=1, gpus_per_trial=gpus, workers_per_trial=workers))
    if progress:
        if resume and run_dir is not None and run_dir.exists():
            print(f"resuming the {workers}-worker run in {run_dir} from its latest checkpoint", file=sys.stderr)
        print(
            f"{cfg.model.name} on {cfg.data.name}, {cfg.selection.method}, {workers} workers "
            f"(global batch {cfg.train.batch_size}); checkpoints in {storage}/{TRAIN_RUN}",
            file=sys.stderr,
        )
    config = {
        "base": cfg.to_dict(),
        "params": {},
        "sites": [a.name for a in trainer.arms],
        "data": tuning.put(data),
        "checkpoint_every": 1,
        "checkpoint_s": 0.0,
    }
    signals = Signals(deferred=False)
    with signals.installed():
        # Ray Train, called on the main thread, puts its own Ctrl-C handler there, which aborts the run and
        # exits 1 with no word. In a (daemon) thread it does not, so our handler stays: 130/143 and a message.
        try:
            result: Any = _in_thread(  # a ray.train Result
                lambda: run_data_parallel(config, workers, 1.0, gpus, storage, TRAIN_RUN, 0, progress=progress)
            )
        except KeyboardInterrupt:
            hint = (
                f"rerun with --checkpoint-dir {checkpoint_dir} --resume"
                if checkpoint_dir
                else "rerun with --checkpoint-dir DIR to be able to resume"
            )
            raise Interrupted(signals.signum(), f"interrupted; no MLflow run was written. {hint}") from None
    if result.error is not None:
        raise RuntimeError(f"the {workers}-worker run failed: {result.error}")
    if keys.ERROR in (result.metrics or {}):
        from .engine import NonFiniteError

        raise NonFiniteError(result.metrics[keys.ERROR])
    with result.checkpoint.as_directory() as d:
        trainer.load_state_dict(safe_load(Path(d) / STATE_FILE), source="the run's last checkpoint")
    summary = trainer.summary()
    summary["workers"] = workers
    summary["restored_after_epoch"] = int((result.metrics or {}).get("restored_after_epoch", 0))
    if open_tracking:
        from .tracking.train_run import TrainRun

        run = TrainRun(open_tracking())
        run.on_train_start(trainer)
        for metrics in trainer.history.epochs:
            run.on_epoch_end(trainer, metrics)
        assert run.logger is not None
        run.logger.tag("workers", str(workers))
        run.on_train_end(trainer, summary)
    if scratch is not None:
        scratch.cleanup()
    return summary, trainer


def rebuild_report(
    experiment: str, benchmark: Optional[str] = None, *, tracking_uri: str = "default", out: str = "report"
) -> dict:
    """Rebuild report.md, results.csv and the plots of a benchmark (default: the latest) from MLflow alone."""
    from .report import write_report
    from .tracking import Tracking

    if out is not None:
        check_dir(out, "--out")
    from .tracking import default_uri

    tracking = Tracking(default_uri(tracking_uri), experiment, create=False)
    known = tracking.benchmarks()
    if not known:
        raise ConfigError(f"--experiment {experiment!r}: no benchmark or sweep runs found at {tracking.uri}")
    if benchmark is not None and benchmark not in known:
        listed = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise ConfigError(
            f"--benchmark {benchmark!r}: experiment {experiment!r} has no benchmark of that name (it has {listed}); "
            "give one of them, or leave --benchmark out for the latest"
        )
    benchmark = benchmark or known[0]
    rows = pd.DataFrame(tracking.trial_rows(benchmark))
    meta = tracking.benchmark_meta(benchmark)
    if not len(rows) or "plain_passes" not in meta:
        raise ConfigError(f"--benchmark {benchmark!r}: no finished trial runs in experiment {experiment!r}")
    info = {"title": f"{experiment}: {benchmark} (rebuilt from MLflow)", "tracking": tracking.uri}
    from .report import incomplete

    partial = incomplete(tracking.method_parents(benchmark))
    if partial is not None:  # running (its writer holds the lock), or stopped: what finished so far, no winner
        info["PARTIAL"] = partial
    if "data.n_val" in meta:
        info["splits"] = f"train {meta['data.n_train']}, val {meta['data.n_val']}, test {meta['data.n_test']} samples"
    return write_report(rows, out, float(meta["plain_passes"]), info)
