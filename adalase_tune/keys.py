"""Every key that adalase_tune writes and reads by name: metrics, Tune's flattened config, MLflow
params and the results tables' columns. Each is spelled here once; the rest of the package imports
it. (Config paths in error messages, such as ``train.epochs``, are the user's YAML and are spelled
where the check is; one-word keys of a run's summary, such as ``epoch`` or ``best_val_acc``, are
spelled where the summary is built; MLflow tags are named in the tracking package.)

Separators, one meaning each:

- ``.`` joins a config path as the user writes it: ``train.seed``, ``adalase.eta`` (YAML,
  ``--set``, MLflow params of a run's config).
- ``/`` joins a namespace to a name in every flat key that Ray Tune or MLflow stores: metrics
  (``val/acc``, ``cost/train_s``, ``adalase/q/<arm>``), Tune's flattened config (``train/seed``:
  Tune flattens a nested config with ``/``, so the config path ``train.seed`` is ``train/seed``
  there) and the results tables' per-arm columns (``q/<arm>``, ``da_prob/<arm>``).
- ``:`` stands for the ``/`` of a joint arm (``input/translate``) where the arm is one part of a
  key that Tune's searchers split on ``/``: the searched weight ``da_prob/input:translate``.
"""

from __future__ import annotations

ERROR = "error"  # a trial's one-line failure reason, reported in place of its metrics

TRAIN_LOSS = "train/loss"
VAL_LOSS, VAL_ACC = "val/loss", "val/acc"
TEST_LOSS, TEST_ACC = "test/loss", "test/acc"
LOSSES = (TRAIN_LOSS, VAL_LOSS, TEST_LOSS)

# cost, per epoch (reported by a trial) ...
COST_TRAIN_S, COST_EVAL_S, COST_ADALASE_S = "cost/train_s", "cost/eval_s", "cost/adalase_s"
COST_DEVICE_S, COST_SAMPLE_PASSES = "cost/device_s", "cost/sample_passes"
# ... and per run or method (logged once, at the end)
COST_TOTAL_DEVICE_S, COST_TOTAL_SAMPLE_PASSES = "cost/total_device_s", "cost/total_sample_passes"
COST_PLAIN_RUN_MULTIPLE = "cost/plain_run_multiple"
COST_PLAIN_RUN_MULTIPLE_DEVICE = "cost/plain_run_multiple_device"

# AdaLASE's per-epoch diagnostics
Q_MAX_DEV, Q_KL, SKIPPED = "adalase/q_max_dev", "adalase/q_kl", "adalase/skipped"
RETRAIN, VAL_SOURCE = "adalase/retrain", "adalase/val_source"  # Tune config keys of the adalase section

# Tune's flattened config: what a search method sets
SELECTION_METHOD, SELECTION_SITE = "selection/method", "selection/site"
TRAIN_SEED = "train/seed"
DA_PROB, DA_PICK = "da_prob", "da_pick"  # the sections of a searched point: weights, or arm and share
PICK_ARM, PICK_SHARE = f"{DA_PICK}/arm", f"{DA_PICK}/share"  # the "arm" search space


def tune_key(path: str) -> str:
    """A config path as Tune's flattened config keys it: ``adalase.eta`` -> ``adalase/eta``."""
    return path.replace(".", "/")


def q(arm: str) -> str:
    """The metric of AdaLASE's probability of ``arm`` after an epoch."""
    return f"adalase/q/{arm}"


def q_marginal(kind: str, name: str) -> str:
    """A joint run's marginal of q over sites or ops (``kind``: ``site`` or ``op``)."""
    return f"adalase/q_{kind}/{name}"


def q_column(arm: str) -> str:
    """The results tables' column of a run's final q on ``arm``."""
    return f"q/{arm}"


def da_prob(arm: str) -> str:
    """The results tables' and MLflow params' key of a run's fixed probability on ``arm``."""
    return f"{DA_PROB}/{arm}"


ARM_COLUMNS = ("q/", f"{DA_PROB}/")  # the prefixes of q_column and da_prob


def weight_name(arm: str) -> str:
    """An arm's name inside a searched key: the ``/`` of a joint arm (``input/translate``) as ``:``,
    since Tune's searchers split nested keys on ``/``."""
    return arm.replace("/", ":")


def weight_key(arm: str) -> str:
    """The search-space key of an arm's weight: ``da_prob/<weight_name(arm)>``."""
    return da_prob(weight_name(arm))
