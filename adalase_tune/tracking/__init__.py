"""MLflow tracking: every MLflow call of adalase_tune lives here.

The run tree of a benchmark: one parent run per method (tags ``method``, ``benchmark``,
``config_hash``), one child run per trial nested under it (``mlflow.parentRunId``, tag
``ray.trial_id``), and a summary run holding the report files. A child run holds the flattened
resolved config plus ``da_prob/<site>`` as params, per-epoch metrics (step = epoch) and final
metrics. All of it is written **by the driver**: trials never open the store, so a SQLite file
on the driver works on any cluster. Metrics are buffered and written in batches.

A resumed trial continues its own run (found by its Ray trial id) and epochs it already logged
are not logged again; a resumed benchmark reuses its parent runs; ``adalase-tune train --resume``
continues the run whose id its checkpoint holds. Every run ends FINISHED, FAILED (with the
reason in the tag ``error``) or KILLED: none is left RUNNING by an error or an interrupt.

Example::

    tracking = Tracking("sqlite:///mlflow.db", "digits")
    parent = tracking.parent_run(method="adalase", benchmark="b1", config_hash=config_hash(cfg))
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..config import ConfigError, ExperimentConfig, flatten
from ..interrupts import STOP_SIGNALS
from ..paths import StorageError
from .rows import TrialResult, TrialRow

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URI = "sqlite:///mlflow.db"  # in the working folder, unless MLFLOW_TRACKING_URI is set
FINAL_METRICS = ("best_val_acc", "test_acc_at_best_val", "final_test_acc")
METRIC_KEYS = ("lr", "best_val_acc", "test_acc_at_best_val", "best_epoch", "phase")  # besides every "a/b" key
SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
CONNECT_TIMEOUT_S = 10.0
_RETRIES = 5
_BATCH = 1000  # MLflow's limit on metrics per log_batch call


def default_uri(uri: str = "default") -> str:
    """``"default"``: MLflow's own ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` in
    the working folder; any other URI is returned as it is."""
    import os

    return (os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI) if uri == "default" else uri


def config_hash(cfg: ExperimentConfig) -> str:
    """A short, stable hash of the shared experiment (without seed and selection)."""
    tree = cfg.to_dict()
    tree["train"].pop("seed")
    tree.pop("selection")
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


class StoreUnavailable(StorageError):
    """The MLflow store went away during the work: its SQLite file deleted, replaced, made
    read-only or full, or its server gone. One line: ``MLflow store unavailable: <path>: <cause>``."""


SQLITE_MAGIC = b"SQLite format 3\x00"
# what SQLite (through SQLAlchemy and MLflow) says when the store is gone, and what that means
_GONE = {
    "readonly database": (errno.EROFS, "read-only (attempt to write a readonly database)"),
    "read-only file system": (errno.EROFS, "read-only file system"),
    "database or disk is full": (errno.ENOSPC, "disk full"),
    "no space left": (errno.ENOSPC, "disk full"),
    "unable to open database": (errno.ENOENT, "cannot open the database file"),
    "no such table": (errno.ENOENT, "its tables are gone (the file was deleted or replaced)"),
    "disk i/o error": (errno.EIO, "disk I/O error"),
    "file is not a database": (errno.EINVAL, "the file is no longer a SQLite database"),
    "malformed": (errno.EINVAL, "the database file is corrupted (malformed)"),
    "max retries exceeded": (errno.ECONNREFUSED, "the server does not answer"),
    "connection refused": (errno.ECONNREFUSED, "the server does not answer"),
}
_LOST: dict = {}  # store -> its StoreUnavailable: a store found gone is not asked again (no retries, no waits)
_STORES: dict = {}  # SQLite path -> (device, inode) when this process opened it
_CREATED: set = set()  # SQLite stores whose schema this process made sure of


def sqlite_path(uri: str) -> Optional[Path]:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _client(uri: str, create: bool = True) -> Any:
    """An MlflowClient of ``uri``. A SQLite store is created (its schema) under a file lock beside it
    (``<file>.lock``): two processes creating one new store at once would both create its tables.
    ``create=False``: a store that exists and is only read (in a folder that may be read-only)."""
    from mlflow.tracking import MlflowClient

    _quiet_store_errors()
    path = sqlite_path(uri)
    if path is None or uri in _CREATED or not create:
        client = MlflowClient(tracking_uri=uri)
    else:
        from filelock import FileLock

        with FileLock(f"{path}.lock", timeout=300):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # the schema exists (and is current) once this returns
        _CREATED.add(uri)
        with contextlib.suppress(OSError):
            st = path.stat()
            _STORES[str(path)] = (st.st_dev, st.st_ino)
    client._adalase_store = uri  # type: ignore[attr-defined]  # for _retry's checks
    return client


def _quiet_store_errors() -> None:
    """MLflow logs every SQLAlchemy error with its traceback (some 100 lines) before it raises it; the
    error itself comes back here, as one line."""
    import logging

    log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _NoStoreTracebacks) for f in log.filters):
        log.addFilter(_NoStoreTracebacks())


class _NoStoreTracebacks:
    def filter(self, record: logging.LogRecord) -> bool:
        # ERROR and above: raised, and said in one line by the caller; INFO ("Creating initial MLflow
        # database tables..."): a new store is not news, and a command's stderr stays its own lines
        return logging.WARNING <= record.levelno < logging.ERROR


def _unavailable(uri: str, err: BaseException) -> Optional[StoreUnavailable]:
    """The :class:`StoreUnavailable` that ``err`` (from a call to the store ``uri``) means, or None."""
    text = " ".join(str(err).split()).lower()
    for needle, (code, cause) in _GONE.items():
        if needle in text:
            path = sqlite_path(uri)
            if path is not None and code in (errno.ENOENT, errno.EIO, errno.EROFS):  # what SQLite could not say
                with contextlib.suppress(OSError):
                    stat = os.statvfs(path.parent)
                    if stat.f_flag & os.ST_RDONLY:
                        code, cause = errno.EROFS, "read-only file system"
                    elif stat.f_bavail * stat.f_frsize < 1 << 16:
                        code, cause = errno.ENOSPC, "disk full"
            return StoreUnavailable(code, f"MLflow store unavailable: {path or uri}: {cause}")
    return None


def _check_store(uri: str) -> None:
    """A SQLite store still there as the file this process opened: SQLite would go on writing into a
    deleted file (its open connections), and every later write would be lost."""
    if uri in _LOST:
        raise _LOST[uri]
    path = sqlite_path(uri)
    if path is None or str(path) not in _STORES:
        return
    try:
        st = path.stat()
        cause = "the file was replaced" if (st.st_dev, st.st_ino) != _STORES[str(path)] else ""
    except FileNotFoundError:
        cause = "the file was deleted"
    except OSError as err:
        cause = err.strerror or type(err).__name__
    if cause:
        _LOST[uri] = StoreUnavailable(errno.ENOENT, f"MLflow store unavailable: {path}: {cause}")
        raise _LOST[uri]


def _retry(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """SQLite stores lock briefly under concurrent writers; retry a few times. A store that went
    away raises :class:`StoreUnavailable` (one line), at once and for every later call."""
    uri = getattr(getattr(fn, "__self__", None), "_adalase_store", None)
    if uri is not None:
        _check_store(uri)
    for attempt in range(_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # mlflow wraps sqlite's OperationalError in MlflowException
            if "locked" in str(err).lower() and attempt < _RETRIES - 1:
                time.sleep(0.2 * 2**attempt)
                continue
            gone = _unavailable(uri, err) if uri is not None else None
            if gone is None:
                raise
            if uri is not None:
                with contextlib.suppress(StoreUnavailable):
                    _check_store(uri)  # a deleted file says so, rather than "no such table"
            _LOST[uri] = _LOST.get(uri, gone)
            raise _LOST[uri] from None


def literal(value: str) -> str:
    """``value`` as a string literal of an MLflow filter: quoted, never able to end the literal."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{value!r}: a name may not hold both ' and \"; choose another")


def uri_flag(uri: str) -> str:
    """Where a tracking URI came from, for messages: ``--tracking-uri``, or MLflow's environment
    variable when that is what the default resolved to."""
    import os

    return "$MLFLOW_TRACKING_URI" if uri and uri == os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"


def check_tracking_uri(uri: str, write: bool = True) -> str:
    """Resolve a relative ``sqlite:///file`` to an absolute path and check the scheme, and that a
    server answers (within ``CONNECT_TIMEOUT_S``): before any run is created. ``write=False``: a
    store that is only read (``report``) may sit in a read-only folder."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{uri_flag(uri)} = {uri!r}: unknown scheme {scheme or '(none)'!r}; use sqlite:///path.db, "
            "http://host:port or another MLflow URI (" + ", ".join(SCHEMES) + ")"
        )
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else Path.cwd() / path
        _check_sqlite(uri, path, write)
        return f"sqlite:///{path}"
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            with socket.create_connection(
                (parts.hostname, parts.port or (443 if scheme == "https" else 80)), timeout=CONNECT_TIMEOUT_S
            ):
                pass
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{uri_flag(uri)} = {uri!r}: no MLflow server answers there ({err}); start it "
                f"(mlflow server --host 127.0.0.1 --port ...) or fix the address"
            ) from None
    return uri


def _check_sqlite(uri: str, path: Path, write: bool = True) -> None:
    """A SQLite store this process can use: a SQLite file (or an empty or new one) in a folder
    where SQLite can write its journal, refused at once otherwise (SQLite retries for minutes)."""
    bad = lambda why, fix: ConfigError(f"{uri_flag(uri)} = {uri!r}: {why}; {fix}")  # noqa: E731
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise bad(f"{above} is a file, not a folder", "name a .db file in a folder")
    if not path.parent.is_dir():
        raise bad(f"folder {path.parent} does not exist", "create it first")
    if path.is_dir():
        raise bad(f"{path} is a folder", "name a .db file")
    if path.exists() and not path.is_file():
        raise bad(f"{path} is not a regular file", "name a .db file")
    try:
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
            if head and head != SQLITE_MAGIC:
                why = f"{path} is not a SQLite database (it starts {head[:8]!r})"
                raise bad(why, "name an MLflow .db file or a new one")
            if not write:
                return
            with open(path, "r+b"):  # SQLite writes it in place
                pass
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"  # and its journal beside it
        probe.touch()
        probe.unlink()
    except OSError as err:
        from ..paths import _CAUSES

        cause = _CAUSES.get(err.errno or 0, err.strerror or type(err).__name__)
        raise bad(f"SQLite cannot write {err.filename or path} ({cause})", "choose a folder you can write") from None


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view
VIEW_KEY = "comparison"  # the shared view of the runs table: ?viewStateShareKey=comparison
COMPARISON_COLUMNS = (  # metrics of the method parent runs, shown as columns by the shared view
    "test_acc_selected",
    "cost/plain_run_multiple",
    "answer_found",
    "test_acc_selected_std",
    "best_val_acc",
)


def comparison_view() -> str:
    """The runs table's view state with the comparison's columns first, as MLflow's "Share" button
    stores it (the experiment tag ``mlflow.sharedViewState.<key>``, opened by ``?viewStateShareKey=<key>``)."""
    columns = [f"metrics.`{m}`" for m in COMPARISON_COLUMNS] + ["tags.`benchmark`", "tags.`seeds`"]
    widths = {c: 180 if "cost/" in c else 130 for c in columns}
    return json.dumps({"selectedColumns": columns, "columnOrder": columns, "columnWidths": widths})


def comparison_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the comparison view, with the UI in its model-training mode."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def parent_of(uri: str, parent_run_id: Optional[str]) -> Optional[tuple[str, str]]:
    """(run id, experiment name) of the run that the project's runs nest under: ``parent_run_id``,
    else the caller's active run (``mlflow.active_run()``), else None. It must be in the store at ``uri``."""
    import mlflow

    active = mlflow.active_run() if parent_run_id is None else None
    run_id = parent_run_id or (active.info.run_id if active else None)
    if run_id is None:
        return None
    client = _client(uri)
    try:
        run = _retry(client.get_run, run_id)
    except Exception:  # MlflowException: no such run here
        if active is not None:
            raise ConfigError(
                f"the active MLflow run {run_id} is not in the store {uri}, so the runs cannot nest under it; "
                f"log to its store (tracking_uri={mlflow.get_tracking_uri()!r}) or end the run first"
            ) from None
        raise ConfigError(
            f"--parent-run-id = {run_id!r}: no such run in {uri}; check the id and --tracking-uri"
        ) from None
    return run_id, _retry(client.get_experiment, run.info.experiment_id).name


class Tracking:
    """Driver-side handle on one MLflow experiment; the runs it starts nest under ``parent_run_id``."""

    def __init__(self, uri: str, experiment: str, create: bool = True, parent_run_id: Optional[str] = None):
        self.uri = check_tracking_uri(uri, write=create)
        self.parent_run_id = parent_run_id
        if not create and self.uri.startswith("sqlite:///") and not Path(self.uri[len("sqlite:///") :]).is_file():
            raise ConfigError(f"{uri_flag(uri)} = {uri!r}: no MLflow store there; give the store a benchmark logged to")
        self.client = _client(self.uri, create)
        exp = _retry(self.client.get_experiment_by_name, experiment)
        if exp is None and not create:
            raise ConfigError(f"--experiment = {experiment!r}: no such experiment at {self.uri}")
        # the experiment kind makes MLflow 3's UI open on the training runs, not the GenAI pages; a
        # SQLite store keeps its artifacts beside the database, not in whatever folder one runs from
        artifacts = None
        if self.uri.startswith("sqlite:///"):
            artifacts = (Path(self.uri[len("sqlite:///") :]).parent / "mlruns").as_uri()
        self.experiment_id = (
            exp.experiment_id
            if exp
            else _retry(
                self.client.create_experiment,
                experiment,
                artifact_location=artifacts,
                tags=EXPERIMENT_KIND,
            )
        )
        self.experiment = experiment
        if create:
            _retry(
                self.client.set_experiment_tag,
                self.experiment_id,
                f"mlflow.sharedViewState.{VIEW_KEY}",
                comparison_view(),
            )

    def _nested(self, tags: dict) -> dict:
        return {**tags, "mlflow.parentRunId": self.parent_run_id} if self.parent_run_id else tags

    def _find(self, filters: str) -> Any:
        runs = _retry(self.client.search_runs, [self.experiment_id], filter_string=filters, max_results=1)
        return runs[0] if runs else None

    def parent_run(
        self,
        method: str,
        benchmark: str,
        config_hash: str,
        params: Optional[dict] = None,
        tags: Optional[dict] = None,
    ) -> str:
        """The parent run of ``method`` in ``benchmark``: reused (RUNNING again) when it exists. It is
        named by the method alone (the UI cuts long names); the benchmark, seeds and date are tags."""
        found = self._find(
            f"tags.method = {literal(method)} and tags.benchmark = {literal(benchmark)} and tags.run_kind = 'method'"
        )
        if found:
            self._reopen(found)
            return found.info.run_id
        tags = {
            **(tags or {}),
            "method": method,
            "benchmark": benchmark,
            "config_hash": config_hash,
            "run_kind": "method",
            "mlflow.runName": method,
        }
        run_id = _retry(self.client.create_run, self.experiment_id, tags=self._nested(tags)).info.run_id
        if params:
            self.log_params(run_id, params)
        return run_id

    def _reopen(self, run: Any) -> None:
        """A run continued by a resume: RUNNING again, without the reason it stopped (a full disk, a
        failed trial retried): it ends with its own outcome."""
        _retry(self.client.update_run, run.info.run_id, status="RUNNING")
        if "error" in run.data.tags:
            _retry(self.client.delete_tag, run.info.run_id, "error")

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, run_id, params=items[i : i + 100])

    def end_run(self, run_id: str, status: str, metrics: Optional[dict] = None, error: str = "") -> None:
        """End a run FINISHED, FAILED (with ``error`` as the reason) or KILLED."""
        if metrics:
            _log_final(self.client, run_id, metrics)
        if error:
            _retry(self.client.set_tag, run_id, "error", error[:5000])
        _retry(self.client.set_terminated, run_id, status)

    def summary_run(
        self,
        benchmark: str,
        files: Sequence[Path],
        metrics: Optional[dict] = None,
        tags: Optional[dict] = None,
        table: Optional[pd.DataFrame] = None,
    ) -> str:
        """The run named ``comparison`` holding the report's files and ``table`` (``comparison.json``,
        logged with ``log_table``: the UI's evaluation and artifact views show it)."""
        found = self._find(f"tags.benchmark = {literal(benchmark)} and tags.run_kind = 'summary'")
        run_id = (
            found.info.run_id
            if found
            else _retry(
                self.client.create_run,
                self.experiment_id,
                tags=self._nested({"benchmark": benchmark, "run_kind": "summary", "mlflow.runName": "comparison"}),
            ).info.run_id
        )
        for key, value in (tags or {}).items():
            _retry(self.client.set_tag, run_id, key, value)
        for f in files:
            _retry(self.client.log_artifact, run_id, str(f))
        if table is not None:
            self.log_table(run_id, table, "comparison.json")
        self.end_run(run_id, "FINISHED", metrics)
        return run_id

    def log_table(self, run_id: str, table: pd.DataFrame, name: str) -> None:
        """``table`` (a DataFrame) as the run's table ``name``; a table logged before is replaced, not
        appended to (MLflow's ``log_table`` appends: a resumed benchmark would list its methods twice)."""
        import tempfile

        if name not in {a.path for a in _retry(self.client.list_artifacts, run_id)}:
            _retry(self.client.log_table, run_id, table, name)
            return
        with tempfile.TemporaryDirectory() as d:
            table.to_json(Path(d) / name, orient="split", index=False)  # log_table's own format
            _retry(self.client.log_artifact, run_id, str(Path(d) / name))

    def log_comparison(self, run_id: str, metrics: dict, tags: Optional[dict] = None) -> None:
        """A method's row of the comparison on its (ended) parent run: metrics and tags."""
        _log_final(self.client, run_id, metrics)
        for key, value in (tags or {}).items():
            _retry(self.client.set_tag, run_id, key, str(value))

    def run_logger(
        self, name: str, tags: dict, params: dict, trial_id: Optional[str] = None, run_id: Optional[str] = None
    ) -> RunLogger:
        """A run to log into: the trial's existing run (by ``trial_id``) or ``run_id`` when there is
        one, continued after the last epoch it holds; else a new run with ``tags`` and ``params``."""
        found = None
        if run_id:
            found = _retry(self.client.get_run, run_id)
        elif trial_id:
            found = self._find(f"tags.`ray.trial_id` = {literal(trial_id)}")
        if found is not None:
            history = _retry(self.client.get_metric_history, found.info.run_id, "val/acc")
            self._reopen(found)
            return RunLogger(self, found.info.run_id, logged_up_to=max((m.step for m in history), default=0))
        tags = {**tags, "mlflow.runName": name, **({"ray.trial_id": trial_id} if trial_id else {})}
        if "mlflow.parentRunId" not in tags:  # a train run: under the caller's run, if any
            tags = self._nested(tags)
        new = _retry(self.client.create_run, self.experiment_id, tags=tags).info.run_id
        self.log_params(new, params)
        return RunLogger(self, new)

    # --- reading back --------------------------------------------------------------------------

    def metric_history(self, run_id: str, keys: Sequence[str]) -> list[list[float]]:
        """``keys``' values per step (the steps of the first key), e.g. a q trajectory."""
        series = [{m.step: m.value for m in _retry(self.client.get_metric_history, run_id, k)} for k in keys]
        return [[s.get(step, float("nan")) for s in series] for step in sorted(series[0])]

    def trial_rows(self, benchmark: Optional[str] = None) -> list[dict]:
        """One row per trial run of the experiment (optionally of one benchmark), as the report wants."""
        parents = _retry(
            self.client.search_runs, [self.experiment_id], filter_string="tags.run_kind = 'method'", max_results=10000
        )
        method_of = {
            p.info.run_id: p.data.tags
            for p in parents
            if benchmark is None or p.data.tags.get("benchmark") == benchmark
        }
        children = _retry(
            self.client.search_runs, [self.experiment_id], filter_string="tags.run_kind = 'trial'", max_results=50000
        )
        rows = []
        for run in children:
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent not in method_of:
                continue
            m, p = run.data.metrics, run.data.params
            status = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}.get(run.info.status, run.info.status)
            row = TrialRow(
                method=method_of[parent]["method"],
                seed=int(p.get("train.seed", 0)),
                trial_id=run.data.tags.get("ray.trial_id"),
                status=status,
                error=run.data.tags.get("error", ""),
                params=json.dumps(
                    {k: v for k, v in p.items() if k.startswith(("da_prob/", "selection."))}, sort_keys=True
                ),
                result=TrialResult(
                    best_val_acc=m.get("best_val_acc", np.nan),
                    test_acc_at_best_val=m.get("test_acc_at_best_val", np.nan),
                    final_test_acc=m.get("final_test_acc", np.nan),
                    epochs=int(m.get("epochs", 0)),
                    device_s=m.get("cost/total_device_s", np.nan),
                    sample_passes=m.get("cost/total_sample_passes", np.nan),
                    finished_at=(run.info.end_time or 0) / 1000.0,
                    node_id=run.data.tags.get("node_id"),
                ),
                arms=_site_columns(run),
            )
            rows.append(row.as_dict())
        return rows

    def method_parents(self, benchmark: str) -> list[dict]:
        """The parent runs of a benchmark's methods: method, status and tags of each."""
        runs = _retry(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.benchmark = {literal(benchmark)} and tags.run_kind = 'method'",
            max_results=1000,
        )
        return [{"method": r.data.tags.get("method"), "status": r.info.status, "tags": r.data.tags} for r in runs]

    def benchmark_meta(self, benchmark: str) -> dict:
        """The params of a benchmark's parent runs (``plain_passes`` among them)."""
        found = self._find(f"tags.benchmark = {literal(benchmark)} and tags.run_kind = 'method'")
        return dict(found.data.params) if found else {}

    def benchmarks(self) -> list[str]:
        """The names of the benchmarks and sweeps logged in this experiment, newest first."""
        runs = _retry(
            self.client.search_runs,
            [self.experiment_id],
            filter_string="tags.run_kind = 'method'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
        )
        return list(dict.fromkeys(r.data.tags["benchmark"] for r in runs if "benchmark" in r.data.tags))


def _site_columns(run: Any) -> dict:
    """``q/<site>`` (AdaLASE's final q) or ``da_prob/<site>`` of a trial run, from its metrics and params."""
    p, m = run.data.params, run.data.metrics
    sites = [s for s in run.data.tags.get("sites", "").split(",") if s]
    if p.get("selection.method") == "adalase":
        return {f"q/{s}": m.get(f"adalase/q/{s}", np.nan) for s in sites}
    return {f"da_prob/{s}": float(p[f"da_prob/{s}"]) for s in sites if f"da_prob/{s}" in p}


def augment_params(cfg: ExperimentConfig) -> dict:
    """The op setting as every run logs it: ``augment.op`` is the op, or the variants a joint
    setting chooses among (``joint over translate, cutout, noise``), never an unused default."""
    from ..arms import ops_text  # here: arms loads the ops, and with them torch

    return {"augment.op": ops_text(cfg.augment)}


def trial_params(cfg: ExperimentConfig, weights: dict) -> dict:
    """The flattened resolved config (``augment.op`` as :func:`augment_params` says it), plus the
    per-site weights ``da_prob/<site>`` it ran with and the categorical ``q/<site> = w / sum(w)``
    they make (uniform when all are 0)."""
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(cfg.to_dict()).items()}
    params.update(augment_params(cfg))
    if weights:
        w = np.array(list(weights.values()), dtype=float)
        q = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        params.update({k: float(v) for k, v in weights.items()})
        params.update({f"q/{k.split('/', 1)[1]}": round(float(v), 6) for k, v in zip(weights, q)})
    return params


def epoch_metrics(result: dict) -> dict:
    """The numeric metrics of a trainer report worth logging (not Ray's bookkeeping fields)."""
    return {
        k: float(v)
        for k, v in result.items()
        if ("/" in k or k in METRIC_KEYS) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _log_final(client: Any, run_id: str, values: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), now, 0)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    if metrics:
        _retry(client.log_batch, run_id, metrics=metrics)


class RunLogger:
    """One run: epochs buffered and written in batches (every ``flush_s`` seconds and at the end),
    epochs already logged skipped, and an end that is FINISHED, FAILED or KILLED."""

    def __init__(self, tracking: Tracking, run_id: str, logged_up_to: int = 0, flush_s: float = 5.0):
        self.tracking, self.client, self.run_id = tracking, tracking.client, run_id
        self.logged_up_to, self.flush_s = logged_up_to, flush_s
        self.buffer: list = []
        self.last_flush = time.monotonic()
        self.ended = False

    def tag(self, key: str, value: str) -> None:
        _retry(self.client.set_tag, self.run_id, key, value)

    def log_epoch(self, metrics: dict, step: int) -> None:
        """Buffer one epoch's numeric metrics at ``step`` (an epoch logged before is skipped)."""
        from mlflow.entities import Metric

        if step <= self.logged_up_to:  # replayed after a restore from an older checkpoint: same values
            return
        now = int(time.time() * 1000)
        self.buffer += [Metric(k, v, now, step) for k, v in metrics.items() if math.isfinite(v)]
        self.logged_up_to = step
        if time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.buffer), _BATCH):
            _retry(self.client.log_batch, self.run_id, metrics=self.buffer[i : i + _BATCH])
        self.buffer = []
        self.last_flush = time.monotonic()

    def finish(self, final: dict, q_history: Optional[list] = None, sites: Sequence[str] = ()) -> None:
        self.flush()
        if q_history:
            self._log_q_plot(q_history, sites)
        self._end("FINISHED", final)

    def fail(self, reason: str) -> None:
        self.flush()
        self._end("FAILED", error=reason)

    def kill(self) -> None:
        self.flush()
        self._end("KILLED")

    def _end(self, status: str, metrics: Optional[dict] = None, error: str = "") -> None:
        if not self.ended:
            self.tracking.end_run(self.run_id, status, metrics, error)
            self.ended = True

    def _log_q_plot(self, q_history: list, sites: Sequence[str]) -> None:
        import tempfile

        from ..report import plot_q_history

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "q_trajectory.png"
            plot_q_history(q_history, sites, path)
            _retry(self.client.log_artifact, self.run_id, str(path))


def final_metrics(result: dict) -> dict:
    """A finished trial's final metrics, from its last epoch's report."""
    out = {k: result[k] for k in FINAL_METRICS[:2] if k in result}
    out.update(
        {
            "final_test_acc": result.get("test/acc"),
            "epochs": result.get("epoch"),
            "cost/total_device_s": result.get("cost/device_s"),
            "cost/total_sample_passes": result.get("cost/sample_passes"),
        }
    )
    return {k: v for k, v in out.items() if v is not None}


def print_comparisons(uri: str, base: str) -> None:
    """One line per experiment that adalase-tune logged to: the URL of its comparison view."""
    client = _client(uri)
    for exp in _retry(client.search_experiments):
        if f"mlflow.sharedViewState.{VIEW_KEY}" in exp.tags:
            print(f"  {exp.name}: the methods compared at {comparison_url(base, exp.experiment_id)}", flush=True)


def _wait_server(proc: subprocess.Popen, received: list, grace_s: float = 10.0) -> int:
    """Wait for the server; once a signal was forwarded, give it ``grace_s`` to stop, then kill its group."""
    import signal

    since = None
    while proc.poll() is None:
        if received and since is None:
            since = time.monotonic()
        if since is not None and time.monotonic() - since > grace_s:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
    return proc.returncode


def _die_with_parent() -> None:
    """In the ``mlflow server`` child, before it runs: on Linux, SIGTERM when ``ui`` dies, even of a
    signal it cannot catch (SIGKILL); elsewhere nothing (``ui``'s handlers end it)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve_ui(uri: str, port: int, startup_s: float = 90.0) -> int:
    """Run ``mlflow server`` for ``uri`` on 127.0.0.1:``port`` (its own output goes to stderr) until
    it exits or a signal arrives; SIGINT and SIGTERM are forwarded to the server's whole process
    group and the exit code is then 128 + the signal. Returns 1, with one line, when the server
    does not come up."""
    import os
    import signal

    uri = check_tracking_uri(uri)
    if not 0 < port < 65536:
        raise ConfigError(f"--port = {port}: choose a port in 1..65535")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise ConfigError(f"--port = {port}: something already listens on 127.0.0.1:{port}; choose another port")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=sys.stderr, start_new_session=True, preexec_fn=_die_with_parent)
    received: list = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    catchable = STOP_SIGNALS + tuple(getattr(signal, n) for n in ("SIGQUIT",) if hasattr(signal, n))
    previous = {sig: signal.signal(sig, forward) for sig in catchable}
    try:
        deadline = time.monotonic() + startup_s
        while proc.poll() is None and time.monotonic() < deadline and not received:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    home = f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
                    print(f"MLflow UI for {uri} at {home} (Ctrl-C to stop)", flush=True)
                    print_comparisons(uri, f"http://127.0.0.1:{port}")
                    code = _wait_server(proc, received)
                    return 128 + received[0] if received else code
            time.sleep(0.2)
        if received:
            proc.wait(timeout=30)
            return 128 + received[0]
        print(
            f"adalase-tune: error: the MLflow server did not come up on 127.0.0.1:{port} within {startup_s:.0f} s "
            f"(exit code {proc.poll()}); see its output above",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def __getattr__(name: str) -> Any:
    """``tracking.TrainRun`` (an engine callback: importing it loads torch, so only on use)."""
    if name == "TrainRun":
        from .train_run import TrainRun

        return TrainRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
