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

This module: :class:`Tracking` (one experiment's runs), :class:`RunLogger` (one run), what a run
logs (:func:`trial_params`, :func:`epoch_metrics`, :func:`final_metrics`) and reading runs back.
Beside it: :mod:`.store` (the URI checks, the client, retries, :class:`StoreUnavailable`),
:mod:`.rows` (``TrialRow``, the one trial-row type), :mod:`.trials` (Tune's driver-side MLflow
callback), :mod:`.train_run` (the ``train`` command's run) and :mod:`.ui` (``adalase-tune ui``).

Example::

    tracking = Tracking("sqlite:///mlflow.db", "digits")
    parent = tracking.parent_run(method="adalase", benchmark="b1", config_hash=config_hash(cfg))
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .. import keys
from ..config import ConfigError, ExperimentConfig, flatten
from .rows import TrialResult, TrialRow
from .store import (  # noqa: F401  (the store's names, re-exported)
    CONNECT_TIMEOUT_S,
    DEFAULT_URI,
    SCHEMES,
    SQLITE_MAGIC,
    StoreUnavailable,
    _client,
    _retry,
    check_tracking_uri,
    default_uri,
    literal,
    sqlite_path,
    uri_flag,
)
from .ui import EXPERIMENT_KIND, VIEW_KEY, comparison_url, comparison_view, serve_ui  # noqa: F401

if TYPE_CHECKING:
    import pandas as pd

FINAL_METRICS = ("best_val_acc", "test_acc_at_best_val", "final_test_acc")
METRIC_KEYS = ("lr", "best_val_acc", "test_acc_at_best_val", "best_epoch", "phase")  # besides every "a/b" key
_BATCH = 1000  # MLflow's limit on metrics per log_batch call


def config_hash(cfg: ExperimentConfig) -> str:
    """A short, stable hash of the shared experiment (without seed and selection)."""
    tree = cfg.to_dict()
    tree["train"].pop("seed")
    tree.pop("selection")
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


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
        """End a run FINISHED, FAILED (with ``error`` as the reason) or KILLED (:meth:`RunLogger.end`)."""
        RunLogger(self, run_id).end(status, metrics, error)

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
            history = _retry(self.client.get_metric_history, found.info.run_id, keys.VAL_ACC)
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
                    {k: v for k, v in p.items() if k.startswith((keys.da_prob(""), "selection."))}, sort_keys=True
                ),
                result=TrialResult(
                    best_val_acc=m.get("best_val_acc", np.nan),
                    test_acc_at_best_val=m.get("test_acc_at_best_val", np.nan),
                    final_test_acc=m.get("final_test_acc", np.nan),
                    epochs=int(m.get("epochs", 0)),
                    device_s=m.get(keys.COST_TOTAL_DEVICE_S, np.nan),
                    sample_passes=m.get(keys.COST_TOTAL_SAMPLE_PASSES, np.nan),
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
        return {keys.q_column(s): m.get(keys.q(s), np.nan) for s in sites}
    return {keys.da_prob(s): float(p[keys.da_prob(s)]) for s in sites if keys.da_prob(s) in p}


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
        params.update({keys.q_column(k.split("/", 1)[1]): round(float(v), 6) for k, v in zip(weights, q)})
    return params


def epoch_metrics(result: dict) -> dict:
    """The numeric metrics of a trainer report worth logging (not Ray's bookkeeping fields)."""
    return {
        k: float(v)
        for k, v in result.items()
        if ("/" in k or k in METRIC_KEYS) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _final(values: dict) -> list:
    """A run's final metrics (at step 0, its numeric and finite values), as MLflow ``Metric``s."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, 0)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]


def _log_final(client: Any, run_id: str, values: dict) -> None:
    metrics = _final(values)
    if metrics:
        _retry(client.log_batch, run_id, metrics=metrics)


class RunLogger:
    """One run: epochs and tags buffered and written in batches (every ``flush_s`` seconds and at
    the end), epochs already logged skipped, and an end that is FINISHED, FAILED or KILLED: at most
    two writes to the store (the last batch with the final metrics, then the status)."""

    def __init__(self, tracking: Tracking, run_id: str, logged_up_to: int = 0, flush_s: float = 5.0):
        self.tracking, self.client, self.run_id = tracking, tracking.client, run_id
        self.logged_up_to, self.flush_s = logged_up_to, flush_s
        self.buffer: list = []
        self.tags: dict[str, str] = {}
        self.last_flush = time.monotonic()
        self.ended = False

    def tag(self, key: str, value: str) -> None:
        """Set a tag with the next batch (at the latest, the run's end)."""
        self.tags[key] = value

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

    def flush(self, final: Optional[dict] = None) -> None:
        """Write the buffered epochs and tags, and ``final`` metrics, in as few batches as MLflow takes."""
        from mlflow.entities import RunTag

        metrics = self.buffer + _final(final or {})
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        for i in range(0, max(len(metrics), 1 if tags else 0), _BATCH):
            _retry(self.client.log_batch, self.run_id, metrics=metrics[i : i + _BATCH], tags=[] if i else tags)
        self.buffer, self.tags = [], {}
        self.last_flush = time.monotonic()

    def finish(self, final: dict, q_history: Optional[list] = None, sites: Sequence[str] = ()) -> None:
        if q_history:
            self._log_q_plot(q_history, sites)
        self.end("FINISHED", final)

    def fail(self, reason: str) -> None:
        self.end("FAILED", error=reason)

    def kill(self) -> None:
        self.end("KILLED")

    def end(self, status: str, metrics: Optional[dict] = None, error: str = "") -> None:
        """End the run ``status``: one batch of what is buffered, ``metrics`` and ``error`` (a tag), then the status."""
        if not self.ended:
            if error:
                self.tags["error"] = error[:5000]
            self.flush(metrics)
            _retry(self.client.set_terminated, self.run_id, status)
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
            "final_test_acc": result.get(keys.TEST_ACC),
            "epochs": result.get("epoch"),
            keys.COST_TOTAL_DEVICE_S: result.get(keys.COST_DEVICE_S),
            keys.COST_TOTAL_SAMPLE_PASSES: result.get(keys.COST_SAMPLE_PASSES),
        }
    )
    return {k: v for k, v in out.items() if v is not None}


def __getattr__(name: str) -> Any:
    """``tracking.TrainRun`` (an engine callback: importing it loads torch, so only on use)."""
    if name == "TrainRun":
        from .train_run import TrainRun

        return TrainRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
