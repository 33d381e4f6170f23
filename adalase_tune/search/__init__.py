"""Search methods, looked up by name (``--method``) in :data:`METHODS`, the one list of them: its
registration order is the order of ``--help``, of a benchmark's default methods and of the report.
They all run the same trainable; :mod:`adalase_tune.tuning` turns their plans into Ray Tune objects.

A new method is one module (a :class:`SearchMethod` subclass, docs/extending.md) and one line::

    METHODS.register(MyMethod.name)(MyMethod())
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from .. import keys
from ..config import ExperimentConfig, from_dict
from ..keys import PICK_ARM, PICK_SHARE, weight_key, weight_name
from ..registry import Registry
from ._base import (
    SPACES,
    ASHASpec,
    Choice,
    Grid,
    OptunaSearcher,
    PBTSpec,
    RandomSearcher,
    SchedulerSpec,
    SearcherPerSeed,
    SearcherSpec,
    SearchMethod,
    SearchPlan,
    Uniform,
    picked_q,
    search_space,
    seed_axis,
    weight_space,
)
from ._optuna import OptunaTPE
from ._random import RandomSearch
from ._schedulers import ASHA, PBT
from ._simple import SINGLE_RUN, AdaLASEMethod, PerSeed, SiteGrid

METHODS: Registry[SearchMethod] = Registry("--method")  # the methods, in registration order
for _m in (
    AdaLASEMethod(),
    AdaLASEMethod("adalase_single", SINGLE_RUN, budget_keys=("eta",)),
    PerSeed("uniform"),
    PerSeed("none"),
    SiteGrid(),
    RandomSearch(),
    OptunaTPE(),
    ASHA(),
    PBT(),
):
    METHODS.register(_m.name)(_m)


def trial_config(base: dict, params: dict, sites: Sequence[str]) -> ExperimentConfig:
    """The experiment of one trial: ``base`` plus its params, nested as Tune keeps them
    (``{"train": {"seed": 1}, "da_prob": {"input": 0.3, ...}}``, flat names ``train/seed``,
    ``da_prob/input``). The searched point (``da_prob`` weights, or the ``da_pick`` arm and share)
    becomes ``selection.weights`` in site order."""
    tree = {k: dict(v) for k, v in base.items()}
    for section, values in params.items():
        if section not in (keys.DA_PROB, keys.DA_PICK):
            tree.setdefault(section, {}).update(values)
    weights = searched_weights(params, sites)
    if weights is not None:
        tree["selection"]["method"] = "probs"
        tree["selection"]["weights"] = weights
    return from_dict(tree)


def searched_weights(params: dict, sites: Sequence[str]) -> Optional[list[float]]:
    """The per-arm weights of a searched point, in site order; None when nothing was searched."""
    if keys.DA_PICK in params:
        pick = params[keys.DA_PICK]
        return picked_q(pick["arm"], pick["share"], sites)
    if keys.DA_PROB in params:
        return [float(params[keys.DA_PROB][weight_name(s)]) for s in sites]
    return None


def site_weights(params: dict, sites: Sequence[str]) -> dict:
    """The per-site weights ``da_prob/<site>`` a trial ran with (fixed: one-hot, uniform: all 1,
    probs: the searched weights); empty for ``none`` and ``adalase`` (whose q is learned)."""
    selection = params.get("selection", {})
    kind = selection.get("method")
    if kind == "probs":
        weights = searched_weights(params, sites) or [float("nan")] * len(sites)
    elif kind == "fixed":
        weights = [float(i == int(selection["site"])) for i in range(len(sites))]
    elif kind == "uniform":
        weights = [1.0] * len(sites)
    else:
        return {}
    return {keys.da_prob(s): w for s, w in zip(sites, weights)}


def nest(flat: dict) -> dict:
    """``{"train/seed": 1}`` -> ``{"train": {"seed": 1}}`` (Tune flattens nested keys with '/')."""
    out: dict = {}
    for key, value in flat.items():
        section, name = key.split("/", 1)
        out.setdefault(section, {})[name] = value
    return out


__all__ = [
    "METHODS",
    "SearchMethod",
    "SearchPlan",
    "Grid",
    "Uniform",
    "Choice",
    "SPACES",
    "PICK_ARM",
    "PICK_SHARE",
    "search_space",
    "picked_q",
    "searched_weights",
    "RandomSearcher",
    "OptunaSearcher",
    "SearcherPerSeed",
    "SearcherSpec",
    "SchedulerSpec",
    "ASHASpec",
    "PBTSpec",
    "seed_axis",
    "weight_space",
    "weight_key",
    "weight_name",
    "trial_config",
    "site_weights",
    "nest",
]
