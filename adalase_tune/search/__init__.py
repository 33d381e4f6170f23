"""Search methods, looked up by name (``--method``): adalase, uniform, none, grid, random,
optuna, asha, pbt. They all run the same trainable; see :mod:`adalase_tune.tuning`."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import ExperimentConfig, from_dict
from ..registry import Registry
from ._base import (
    ASHASpec,
    Grid,
    OptunaSearcher,
    PBTSpec,
    RandomSearcher,
    SearchMethod,
    SearchPlan,
    Uniform,
    seed_axis,
    weight_key,
    weight_name,
    weight_space,
)
from ._optuna import OptunaTPE
from ._random import RandomSearch
from ._schedulers import ASHA, PBT
from ._simple import AdaLASEMethod, PerSeed, SiteGrid

METHODS: Registry[SearchMethod] = Registry("--method")
for _m in (
    AdaLASEMethod(),
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
    ``da_prob/input``). The weights become ``selection.weights`` in site order."""
    tree = {k: dict(v) for k, v in base.items()}
    weights = None
    for section, values in params.items():
        if section == "da_prob":
            weights = values
        else:
            tree.setdefault(section, {}).update(values)
    if weights is not None:
        tree["selection"]["method"] = "probs"
        tree["selection"]["weights"] = [float(weights[weight_name(s)]) for s in sites]
    return from_dict(tree)


def site_weights(params: dict, sites: Sequence[str]) -> dict:
    """The per-site weights ``da_prob/<site>`` a trial ran with (fixed: one-hot, uniform: all 1,
    probs: the searched weights); empty for ``none`` and ``adalase`` (whose q is learned)."""
    selection = params.get("selection", {})
    kind = selection.get("method")
    if kind == "probs":
        weights = [float(params.get("da_prob", {}).get(weight_name(s), float("nan"))) for s in sites]
    elif kind == "fixed":
        weights = [float(i == int(selection["site"])) for i in range(len(sites))]
    elif kind == "uniform":
        weights = [1.0] * len(sites)
    else:
        return {}
    return {f"da_prob/{s}": w for s, w in zip(sites, weights)}


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
    "RandomSearcher",
    "OptunaSearcher",
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
