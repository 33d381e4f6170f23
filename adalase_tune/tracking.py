"""MLflow tracking: every MLflow call of adalase_tune lives here.

The run tree of a benchmark: one parent run per method (tags ``method``, ``benchmark``,
``config_hash``), one child run per trial nested under it (``mlflow.parentRunId``), and a
summary run holding report.md, results.csv and cost_vs_accuracy.png. A child run holds the
flattened resolved config plus ``da_prob/<site>`` and ``q/<site>`` as params, per-epoch metrics
(step = epoch, logged in one batch per epoch) and final metrics. A resumed trial continues its
own run (found by its Ray trial id) and a resumed benchmark reuses its parent runs.

Example::

    tracking = Tracking("sqlite:///mlflow.db", "digits")
    parent = tracking.parent_run(method="adalase", benchmark="b1", config_hash=config_hash(cfg))
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .config import ConfigError, ExperimentConfig, flatten

DEFAULT_URI = "sqlite:///mlflow.db"
FINAL_METRICS = ("best_val_acc", "test_acc_at_best_val", "final_test_acc")
_RETRIES = 5


def config_hash(cfg: ExperimentConfig) -> str:
    """A short, stable hash of the shared experiment (without seed and selection)."""
    tree = cfg.to_dict()
    tree["train"].pop("seed")
    tree.pop("selection")
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _retry(fn, *args, **kwargs):
    """SQLite stores lock briefly under concurrent trials; retry a few times."""
    for attempt in range(_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # mlflow wraps sqlite's OperationalError in MlflowException
            if "locked" not in str(err).lower() or attempt == _RETRIES - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)


def check_tracking_uri(uri: str) -> str:
    """Resolve a relative ``sqlite:///file`` to an absolute path (trials run elsewhere) and check it."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else Path.cwd() / path
        if not path.parent.is_dir():
            raise ConfigError(f"--tracking-uri = {uri!r}: folder {path.parent} does not exist; create it first")
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://", "databricks", "file:")) or "://" in uri:
        return uri
    raise ConfigError(f"--tracking-uri = {uri!r}: expected sqlite:///path.db, http://host:port or another MLflow URI")


class Tracking:
    """Driver-side handle on one MLflow experiment."""

    def __init__(self, uri: str, experiment: str, create: bool = True):
        self.uri = check_tracking_uri(uri)
        if not create and self.uri.startswith("sqlite:///") and not Path(self.uri[len("sqlite:///"):]).is_file():
            raise ConfigError(f"--tracking-uri = {uri!r}: no MLflow store there; give the store a benchmark logged to")
        self.client = _client(self.uri)
        exp = _retry(self.client.get_experiment_by_name, experiment)
        if exp is None and not create:
            raise ConfigError(f"--experiment = {experiment!r}: no such experiment at {self.uri}")
        # the experiment kind makes MLflow 3's UI open on the training runs, not the GenAI pages
        self.experiment_id = exp.experiment_id if exp else _retry(
            self.client.create_experiment, experiment, tags={"mlflow.experimentKind": "custom_model_development"})
        self.experiment = experiment

    def _find(self, filters: str):
        runs = _retry(self.client.search_runs, [self.experiment_id], filter_string=filters, max_results=1)
        return runs[0] if runs else None

    def parent_run(self, method: str, benchmark: str, config_hash: str, params: Optional[dict] = None) -> str:
        """The parent run of ``method`` in ``benchmark``: reused when it exists (a resumed sweep)."""
        found = self._find(f"tags.method = '{method}' and tags.benchmark = '{benchmark}' "
                           f"and tags.run_kind = 'method'")
        if found:
            return found.info.run_id
        tags = {"method": method, "benchmark": benchmark, "config_hash": config_hash, "run_kind": "method",
                "mlflow.runName": f"{method} ({benchmark})"}
        run_id = _retry(self.client.create_run, self.experiment_id, tags=tags).info.run_id
        if params:
            from mlflow.entities import Param

            _retry(self.client.log_batch, run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run_id

    def trial_factory(self, parent_run_id: Optional[str]):
        """A picklable callable that creates a :class:`TrialTracker` inside a Ray trial."""
        return TrialTrackerFactory(self.uri, self.experiment_id, parent_run_id)

    def finish_parent(self, run_id: str, totals: dict) -> None:
        _log_final(self.client, run_id, totals)
        _retry(self.client.set_terminated, run_id, "FINISHED")

    def summary_run(self, benchmark: str, files: Sequence[Path], metrics: Optional[dict] = None) -> str:
        found = self._find(f"tags.benchmark = '{benchmark}' and tags.run_kind = 'summary'")
        run_id = found.info.run_id if found else _retry(
            self.client.create_run, self.experiment_id,
            tags={"benchmark": benchmark, "run_kind": "summary", "mlflow.runName": f"summary ({benchmark})"}).info.run_id
        for f in files:
            _retry(self.client.log_artifact, run_id, str(f))
        if metrics:
            _log_final(self.client, run_id, metrics)
        _retry(self.client.set_terminated, run_id, "FINISHED")
        return run_id

    def standalone_run(self, cfg: ExperimentConfig, sites: Sequence[str]) -> "TrialTracker":
        """A run for ``adalase-tune train`` (no parent)."""
        return TrialTracker(self.uri, self.experiment_id, None, cfg, sites, trial_id=None)

    # --- reading back --------------------------------------------------------------------------

    def trial_rows(self, benchmark: Optional[str] = None) -> list[dict]:
        """One row per trial run of the experiment (optionally of one benchmark), as the report wants."""
        parents = _retry(self.client.search_runs, [self.experiment_id], filter_string="tags.run_kind = 'method'",
                         max_results=10000)
        method_of = {p.info.run_id: p.data.tags for p in parents
                     if benchmark is None or p.data.tags.get("benchmark") == benchmark}
        children = _retry(self.client.search_runs, [self.experiment_id], filter_string="tags.run_kind = 'trial'",
                          max_results=50000)
        rows = []
        for run in children:
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent not in method_of:
                continue
            m, p = run.data.metrics, run.data.params
            status = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}.get(run.info.status, run.info.status)
            rows.append({
                "method": method_of[parent]["method"], "seed": int(p.get("train.seed", 0)),
                "trial_id": run.data.tags.get("ray.trial_id"), "status": status,
                "error": run.data.tags.get("error", ""),
                "params": json.dumps({k: v for k, v in p.items() if k.startswith(("da_prob/", "selection."))},
                                     sort_keys=True),
                "best_val_acc": m.get("best_val_acc", np.nan), "test_acc_at_best_val": m.get("test_acc_at_best_val", np.nan),
                "final_test_acc": m.get("final_test_acc", np.nan), "epochs": int(m.get("epochs", 0)),
                "device_s": m.get("cost/total_device_s", np.nan), "sample_passes": m.get("cost/total_sample_passes", np.nan),
                "finished_at": (run.info.end_time or 0) / 1000.0, "node_id": run.data.tags.get("node_id"),
                **_site_columns(run),
            })
        return rows

    def benchmark_meta(self, benchmark: str) -> dict:
        """The params of a benchmark's parent runs (``plain_passes`` among them)."""
        found = self._find(f"tags.benchmark = '{benchmark}' and tags.run_kind = 'method'")
        return dict(found.data.params) if found else {}

    def latest_benchmark(self) -> Optional[str]:
        runs = _retry(self.client.search_runs, [self.experiment_id], filter_string="tags.run_kind = 'method'",
                      max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].data.tags["benchmark"] if runs else None


def _site_columns(run) -> dict:
    """``q/<site>`` or ``da_prob/<site>`` of a trial run, as :func:`adalase_tune.tuning.site_columns`."""
    from .tuning import site_columns

    p, sites = run.data.params, [s for s in run.data.tags.get("sites", "").split(",") if s]
    params = {"selection": {"method": p.get("selection.method"), "site": p.get("selection.site")},
              "da_prob": {s: p[f"da_prob/{s}"] for s in sites if f"da_prob/{s}" in p}}
    return site_columns(params, run.data.metrics, sites)


class TrialTrackerFactory:
    """Created on the driver, called in the trial: ``factory(cfg, sites, trial_id)``."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: Optional[str]):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id

    def __call__(self, cfg: ExperimentConfig, sites: Sequence[str], trial_id: Optional[str]) -> "TrialTracker":
        return TrialTracker(self.uri, self.experiment_id, self.parent_run_id, cfg, sites, trial_id)


def trial_params(cfg: ExperimentConfig, sites: Sequence[str]) -> dict:
    """Flattened resolved config, plus ``da_prob/<site>`` (the searched weights) and ``q/<site>``."""
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(cfg.to_dict()).items()}
    sel = cfg.selection
    if sel.method == "probs" and sel.weights:
        w = np.asarray(sel.weights, dtype=float)
        q = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        params.update({f"da_prob/{s}": float(v) for s, v in zip(sites, w)})
        params.update({f"q/{s}": round(float(v), 6) for s, v in zip(sites, q)})
    return params


def _log_final(client, run_id: str, values: dict) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
    if metrics:
        _retry(client.log_batch, run_id, metrics=metrics)


class TrialTracker:
    """One trial's MLflow run: params at the start, one metric batch per epoch, finals at the end."""

    def __init__(self, uri, experiment_id, parent_run_id, cfg: ExperimentConfig, sites, trial_id):
        from mlflow.entities import Param, RunTag

        self.client = _client(uri)
        self.sites = list(sites)
        self.adalase = cfg.selection.method == "adalase"
        found = None
        if trial_id:
            runs = _retry(self.client.search_runs, [experiment_id],
                          filter_string=f"tags.`ray.trial_id` = '{trial_id}'", max_results=1)
            found = runs[0] if runs else None
        self.logged_up_to = 0
        if found is not None:  # a restarted or resumed trial continues its own run
            self.run_id = found.info.run_id
            history = _retry(self.client.get_metric_history, self.run_id, "val/acc")
            self.logged_up_to = max((m.step for m in history), default=0)
            _retry(self.client.update_run, self.run_id, status="RUNNING")
            return
        tags = {"run_kind": "trial", "method_selection": cfg.selection.method,
                "mlflow.runName": f"{cfg.selection.method} seed {cfg.train.seed}" + (f" {trial_id}" if trial_id else "")}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if trial_id:
            tags["ray.trial_id"] = trial_id
        self.run_id = _retry(self.client.create_run, experiment_id, tags=tags).info.run_id
        params = [Param(k, str(v)) for k, v in trial_params(cfg, self.sites).items()]
        for i in range(0, len(params), 100):
            _retry(self.client.log_batch, self.run_id, params=params[i:i + 100])
        _retry(self.client.log_batch, self.run_id, tags=[RunTag("sites", ",".join(self.sites))])

    def log_epoch(self, metrics: dict) -> None:
        """All of an epoch's numeric metrics in one batch, step = epoch."""
        from mlflow.entities import Metric

        step, now = int(metrics["epoch"]), int(time.time() * 1000)
        if step <= self.logged_up_to:  # replayed after a restore from an older checkpoint: same values
            return
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        _retry(self.client.log_batch, self.run_id, metrics=batch)

    def finish(self, summary: dict) -> None:
        cost = summary["cost"]
        _log_final(self.client, self.run_id, {
            **{k: summary[k] for k in FINAL_METRICS if summary.get(k) is not None}, "epochs": summary["epochs"],
            "cost/total_device_s": cost["train_s"] + cost["eval_s"] + cost["adalase_s"],
            "cost/total_sample_passes": cost["sample_passes"]})
        _retry(self.client.set_tag, self.run_id, "device", cost["device"])
        if summary.get("q_history"):
            self._log_q_plot(summary["q_history"])
        _retry(self.client.set_terminated, self.run_id, "FINISHED")

    def tag(self, key: str, value: str) -> None:
        _retry(self.client.set_tag, self.run_id, key, value)

    def fail(self, error: BaseException) -> None:
        _retry(self.client.set_tag, self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        _retry(self.client.set_terminated, self.run_id, "FAILED")

    def _log_q_plot(self, q_history) -> None:
        import tempfile

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        q = np.asarray(q_history)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, site in enumerate(self.sites):
            ax.plot(np.arange(1, len(q) + 1), q[:, i], label=site)
        ax.set_xlabel("epoch")
        ax.set_ylabel("q (site probability)")
        ax.set_title("AdaLASE q trajectory")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "q_trajectory.png"
            fig.savefig(path, dpi=110)
            _retry(self.client.log_artifact, self.run_id, str(path))
        plt.close(fig)
