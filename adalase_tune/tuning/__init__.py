"""Sweeps on Ray Tune: every Ray call of the driver lives in this package.

:func:`fit` runs the Tuners of one search method (see :mod:`adalase_tune.search`) over the same
trainable, on a private local Ray or a cluster (``address``), with results and checkpoints under
``storage`` (a path, shared on a cluster, or a URI such as ``s3://bucket/runs``). The driver logs
every trial to MLflow from Tune's callbacks (``tracking.trials.MLflowTrials``), so trials never
touch the tracking store. ``adalase_tune.experiment`` orchestrates; this package only talks to Ray.

- :mod:`.tuner`: options, jobs, the trainable's resources, :func:`fit`, your own Tuner's pieces;
- :mod:`.specs`: each search spec's Ray object (one builder per spec type);
- :mod:`.storage`: the storage root, experiment names and meta files;
- :mod:`.connect`: joining Ray, the resource check, the object store;
- :mod:`.recovery`: how ``--resume`` works, and every reach into Ray's internals;
- :mod:`.disk_full`: a full ``--storage`` as one line.

Example::

    connect()
    grid = fit(cfg, job, options, root, sites, callbacks=[TrialProgress(job.name, job.plan.expected_trials)])
"""

from .connect import check_reachable, check_resources, connect, put
from .recovery import DIGESTS, STATE_BACKUP, StateGuard, check_pickles
from .recovery import no_trial_yet as _no_trial_yet  # noqa: F401  (its tests' name)
from .specs import clip_weights
from .storage import check_name, experiment_exists, is_uri, join, load_meta, make_storage, save_meta, storage_root
from .tuner import (
    METRIC,
    MODE,
    Job,
    SweepOptions,
    TrialProgress,
    check_workers,
    fit,
    plan_jobs,
    search_space,
    tune_config,
    tune_trainable,
    unfinished,
)

# Names an experiment's pickled Tuner state holds from before this package was split (Tune pickles
# its callbacks by module path): an experiment started then still resumes. Resolved on first use,
# so importing tuning loads no MLflow.
_MOVED = {"MLflowTrials": "adalase_tune.tracking.trials"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIGESTS",
    "METRIC",
    "MODE",
    "STATE_BACKUP",
    "Job",
    "StateGuard",
    "SweepOptions",
    "TrialProgress",
    "check_name",
    "check_pickles",
    "check_reachable",
    "check_resources",
    "check_workers",
    "clip_weights",
    "connect",
    "experiment_exists",
    "fit",
    "is_uri",
    "join",
    "load_meta",
    "make_storage",
    "plan_jobs",
    "put",
    "save_meta",
    "search_space",
    "storage_root",
    "tune_config",
    "tune_trainable",
    "unfinished",
]
