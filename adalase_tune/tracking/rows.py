"""The trial row: one trial's outcome as the report, results.csv and ``TrialsFailed`` read it. Two
builders make it, from the same :class:`TrialRow`: from a Ray Tune ResultGrid
(``tracking.trials.trial_rows``, as a sweep ends) and from the MLflow store
(``Tracking.trial_rows``, for ``adalase-tune report``). No Ray, MLflow or torch here.

Example::

    row = TrialRow("grid", seed=0, trial_id="fc6a3_00000", status="TERMINATED", params="{}",
                   result=TrialResult(0.9, 0.88, 0.87, epochs=3, device_s=1.2, sample_passes=300))
    row.as_dict()  # {"method": "grid", "seed": 0, ..., "best_val_acc": 0.9, ...}
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# a trial row's status from Tune: finished, failed, interrupted (from MLflow also KILLED or RUNNING)
STATUSES = ("TERMINATED", "ERROR", "UNFINISHED")


@dataclass
class TrialResult:
    """A trial's figures: selection on val, test there and at the end, and what it cost."""

    best_val_acc: float
    test_acc_at_best_val: float
    final_test_acc: float
    epochs: int
    device_s: float
    sample_passes: float
    finished_at: float = 0.0  # seconds since the epoch
    node_id: Optional[str] = None
    host: dict = field(default_factory=dict)  # device, threads, torch: what the result depends on, when known


@dataclass
class TrialRow:
    """One trial. ``params``: its config as JSON; ``result``: its figures (None: it has none);
    ``arms``: per arm ``q/<arm>`` (AdaLASE's final q) or ``da_prob/<arm>`` (the weights it ran with)."""

    method: str
    seed: Optional[int]
    trial_id: Optional[str]
    status: str  # one of STATUSES, or an MLflow status
    params: str
    error: str = ""
    result: Optional[TrialResult] = None
    arms: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The flat row (results.csv's columns, in this order)."""
        row: dict[str, Any] = {
            "method": self.method,
            "seed": self.seed,
            "trial_id": self.trial_id,
            "status": self.status,
            "error": self.error,
            "params": self.params,
        }
        if self.result is not None:
            figures = {f.name: getattr(self.result, f.name) for f in dataclasses.fields(self.result)}
            host = figures.pop("host")
            row.update(figures)
            row.update(host)
        return {**row, **self.arms}


def trial_error(error: Any) -> str:
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


def trial_id_of(path: Optional[str]) -> Optional[str]:
    """The trial id in a trial's folder name (``adalase_trial_fc6a3_00000_0_...``): a trial that
    failed before its first report has no metrics to take it from."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})(_|$)", Path(path or "").name)
    return found.group(1) if found else None
