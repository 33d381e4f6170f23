"""The trials of a Tuner in MLflow, logged on the driver: Ray Tune's ``MLflowLoggerCallback``,
extended (:class:`MLflowTrials`), the runs a fit could not end (:func:`settle_runs`), and a
ResultGrid as trial rows (:func:`trial_rows`). Ray enters here only as the callback's base and the
ResultGrid it is handed; every MLflow call goes through :mod:`adalase_tune.tracking`.

Tune pickles a Tuner's callbacks into its tuner.pkl and uses those copies on a restore, so
:class:`MLflowTrials` keeps only plain settings in its state and rebuilds its connection in ``setup``.

Example::

    callbacks = [MLflowTrials(tracking.uri, tracking.experiment, parent_run_id, cfg.to_dict(), sites)]
    grid = tuning.fit(cfg, job, options, root, sites, callbacks)
    rows = trial_rows(grid, "grid", sites)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from ray.air.integrations.mlflow import MLflowLoggerCallback

from .. import keys
from ..search import site_weights, trial_config
from . import StoreUnavailable, Tracking, epoch_metrics, final_metrics, literal, trial_params
from .rows import TrialResult, TrialRow, trial_error, trial_id_of

if TYPE_CHECKING:
    from . import RunLogger

_LIVE: list = []  # the MLflowTrials of this driver process, for close_open_runs()
STORE_LOST: list = []  # the StoreUnavailable that stopped this process's sweep, if one did


def _run_name(cfg: Any, trial_id: str) -> str:
    return f"{cfg.selection.method} seed {cfg.train.seed} {trial_id}"


class MLflowTrials(MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback``, extended: runs nested under a parent run, a resumed trial
    continuing its own run, replayed epochs skipped, metrics buffered and written in batches, a
    diverged or failed trial FAILED with its reason, and the q plot at the end.

    Example::

        tune.RunConfig(callbacks=[MLflowTrials("sqlite:///mlflow.db", "motifs", parent, cfg.to_dict(), sites)])
    """

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, base: dict, sites: Sequence[str]):
        super().__init__(
            tracking_uri=tracking_uri,
            experiment_name=experiment,
            tags={"run_kind": "trial", "mlflow.parentRunId": parent_run_id, "sites": ",".join(sites)},
        )
        self.base, self.sites = base, list(sites)
        self.__setstate__(self.__getstate__())

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_tracking", "_trial_runs", "last")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._tracking: Optional[Tracking] = None
        self._trial_runs: dict[str, RunLogger] = {}
        self.last: dict[str, dict] = {}

    def setup(self, *args: Any, **kwargs: Any) -> None:  # not Ray's: the experiment exists, no global MLflow state
        _LIVE.append(self)
        self._store(lambda: setattr(self, "_tracking", Tracking(str(self.tracking_uri), str(self.experiment_name))))

    @property
    def tracking(self) -> Tracking:
        assert self._tracking is not None, "setup() comes first"
        return self._tracking

    def _store(self, call: Callable[[], Any]) -> None:
        """Every MLflow call of a Tune callback: a store that went away (``StoreUnavailable``) stops
        the sweep gracefully (Tune's SIGUSR1: it saves its state, the trials keep their checkpoints)
        instead of aborting Tune with its tracebacks; the driver then says so in one line. Once the
        store is gone, nothing more is sent to it."""
        if STORE_LOST:
            return
        try:
            call()
        except StoreUnavailable as err:
            STORE_LOST.append(err)
            logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # its "stop signal received": not a signal
            if hasattr(signal, "SIGUSR1"):
                os.kill(os.getpid(), signal.SIGUSR1)

    def log_trial_start(self, trial: Any) -> None:
        self._store(lambda: self._log_trial_start(trial))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        self._store(lambda: self._log_trial_result(iteration, trial, result))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._store(lambda: self._log_trial_end(trial, failed))

    def _log_trial_start(self, trial: Any) -> None:
        if trial.trial_id in self._trial_runs:
            return
        cfg = trial_config(self.base, trial.config, self.sites)
        params = trial_params(cfg, site_weights(trial.config, self.sites))
        tags = {**(self.tags or {}), "method_selection": cfg.selection.method}
        self._trial_runs[trial.trial_id] = self.tracking.run_logger(
            _run_name(cfg, trial.trial_id), tags, params, trial_id=trial.trial_id
        )

    def _log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        self.last[trial.trial_id] = result
        if keys.ERROR not in result:
            for epoch in result.get("epochs") or [result]:  # a batch of epochs, or one
                self._trial_runs[trial.trial_id].log_epoch(epoch_metrics(epoch), int(epoch["epoch"]))

    def _log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run = self._trial_runs.get(trial.trial_id)
        if run is None or run.ended:
            return
        last = self.last.get(trial.trial_id) or trial.last_result or {}
        if failed or keys.ERROR in last:
            raised = None if keys.ERROR in last else trial.get_error()
            error = last.get(keys.ERROR) or (trial_error(raised) if raised else "the trial failed")
            run.fail(" ".join(error.split())[:2000])
            return
        for key in ("node_id", "device", "workers", "threads", "torch"):  # where and how the result was made
            if key in last:
                run.tag(key, str(last[key]))
        q = None
        if keys.q(self.sites[0]) in last:
            run.flush()
            q = self.tracking.metric_history(run.run_id, [keys.q(s) for s in self.sites])
        run.finish(final_metrics(last), q, self.sites)

    def close(self) -> None:
        """Every run still open ends KILLED (an interrupted sweep), its buffered epochs written; with
        the store gone, none can be, and a resume continues them."""
        for run in self._trial_runs.values():
            if not run.ended:
                with contextlib.suppress(StoreUnavailable):
                    run.kill()


def close_open_runs() -> None:
    """KILLED for the open trial runs of every MLflowTrials of this process (after an interrupt)."""
    for callback in _LIVE:
        callback.close()
    _LIVE.clear()


def lost_store() -> Optional[StoreUnavailable]:
    """The ``StoreUnavailable`` that stopped the last fit (the MLflow store went away), or None."""
    return STORE_LOST[0] if STORE_LOST else None


def settle_runs(grid: Any, tracking: Tracking, parent: Optional[str], base: dict, sites: Sequence[str]) -> None:
    """After a fit: a trial that ended in Tune but whose MLflow run did not (the store went away as it
    ended, or a resume logs into a new store) gets its run ended now from Tune's record: FINISHED
    with its final metrics, or FAILED with its reason. Runs already ended are left as they are."""
    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id") or trial_id_of(result.path)
        if not trial_id or not (m.get("done") or result.error is not None or keys.ERROR in m):
            continue
        found = tracking._find(f"tags.`ray.trial_id` = {literal(trial_id)}")
        if found is not None and found.info.status != "RUNNING":
            continue
        cfg = trial_config(base, result.config or {}, sites)
        tags = {"run_kind": "trial", "mlflow.parentRunId": parent, "sites": ",".join(sites),
                "method_selection": cfg.selection.method}  # fmt: skip
        params = trial_params(cfg, site_weights(result.config or {}, sites))
        run = tracking.run_logger(_run_name(cfg, trial_id), tags, params, trial_id)
        if result.error is not None or keys.ERROR in m:
            run.fail(" ".join((m.get(keys.ERROR) or trial_error(result.error)).split())[:2000])
        else:
            run.finish(final_metrics(m))


def trial_rows(grid: Any, method: str, sites: Sequence[str] = ()) -> list[dict]:
    """One :class:`TrialRow` (as a plain dict) per trial of a ResultGrid: selection on val, test
    there, costs, status, and per site ``q/<site>`` (AdaLASE's final q) or ``da_prob/<site>`` (the
    weights it ran with)."""
    rows = []
    for result in grid:
        params = result.config or {}
        m = result.metrics or {}  # the last report: it carries the running best (no progress file needed)
        row = TrialRow(
            method=method,
            seed=params.get("train", {}).get("seed"),
            trial_id=m.get("trial_id") or trial_id_of(result.path),
            status="TERMINATED",
            params=json.dumps(params, sort_keys=True, default=str),
        )
        if result.error is not None or keys.ERROR in m:
            row.status, row.error = "ERROR", m.get(keys.ERROR) or trial_error(result.error)
        elif not m.get("done"):
            row.status, row.error = "UNFINISHED", "interrupted before it finished"
        if "best_val_acc" in m and row.status == "TERMINATED":
            row.result = TrialResult(
                best_val_acc=float(m["best_val_acc"]),
                test_acc_at_best_val=float(m["test_acc_at_best_val"]),
                final_test_acc=float(m[keys.TEST_ACC]),
                epochs=int(m["epoch"]),
                device_s=float(m[keys.COST_DEVICE_S]),
                sample_passes=int(m[keys.COST_SAMPLE_PASSES]),
                finished_at=float(m.get("timestamp", 0)),
                node_id=m.get("node_id"),
                host={k: m.get(k) for k in ("device", "threads", "torch")},  # what the result depends on
            )
        elif row.status == "TERMINATED":
            row.status, row.error = "ERROR", "the trial reported no epoch"
        if params.get("selection", {}).get("method") == "adalase":
            row.arms = {keys.q_column(s): m.get(keys.q(s), np.nan) for s in sites}
        else:
            row.arms = site_weights(params, sites)
        rows.append(row.as_dict())
    return rows
