"""Search methods, looked up by name (``--method``): adalase, uniform, none, grid, random,
optuna, asha, pbt. They all run the same trainable; see :mod:`adalase_tune.tuning`."""
from __future__ import annotations

from typing import Sequence

from ..config import ExperimentConfig, from_dict
from ..registry import Registry
from ._base import Grid, SearchMethod, SearchPlan, Uniform
from ._optuna import OptunaTPE
from ._random import RandomSearch
from ._schedulers import ASHA, PBT
from ._simple import AdaLASEMethod, PerSeed, SiteGrid

METHODS: Registry[SearchMethod] = Registry("--method")
for _m in (AdaLASEMethod(), PerSeed("uniform"), PerSeed("none"), SiteGrid(), RandomSearch(), OptunaTPE(),
           ASHA(), PBT()):
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
        tree["selection"]["weights"] = [float(weights[s]) for s in sites]
    return from_dict(tree)


def nest(flat: dict) -> dict:
    """``{"train/seed": 1}`` -> ``{"train": {"seed": 1}}`` (Tune flattens nested keys with '/')."""
    out: dict = {}
    for key, value in flat.items():
        section, name = key.split("/", 1)
        out.setdefault(section, {})[name] = value
    return out


SWEEP_KEYS = ("seeds", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "methods")


def sweep_settings(section) -> dict:
    """Check the YAML ``sweep:`` section: seeds (a count or a list), resources, and
    ``methods: {name: budget}`` (the benchmark runs these methods, in this order)."""
    from ..config import ConfigError, _did_you_mean

    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"sweep = {section!r}: expected a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in section:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"unknown config key 'sweep.{key}'{_did_you_mean(key, SWEEP_KEYS)}; "
                              f"valid sweep.* keys: {', '.join(SWEEP_KEYS)}")
    out = dict(section)
    seeds = out.get("seeds")
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ConfigError(f"sweep.seeds = {seeds}: give a count >= 1 or a list of seeds")
            out["seeds"] = list(range(seeds))
        elif not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
            raise ConfigError(f"sweep.seeds = {seeds!r}: give a count >= 1 or a list of whole numbers")
    methods = out.get("methods") or {}
    if not isinstance(methods, dict):
        raise ConfigError(f"sweep.methods = {methods!r}: expected a mapping of method name to its budget")
    for name, budget in methods.items():
        if budget is not None and not isinstance(budget, dict):
            raise ConfigError(f"sweep.methods.{name} = {budget!r}: expected a mapping of budget keys (or nothing)")
        METHODS.get(name).budget(budget)
    out["methods"] = {k: dict(v or {}) for k, v in methods.items()}
    return out


__all__ = ["sweep_settings", "METHODS", "SearchMethod", "SearchPlan", "Grid", "Uniform", "trial_config", "nest"]
