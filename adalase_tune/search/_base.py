"""The search-method contract: a method turns the model's sites, the seeds and its budget into a
:class:`SearchPlan` (a description; ``adalase_tune.tuning`` turns it into Ray Tune objects).

Keys are Tune's flat names (``train/seed``, ``selection/method``). Per-site weights are
searched as ``da_prob/<site>`` in [0, 1]; a trial uses ``q = w / sum(w)``
(ALGORITHM.md section 2). Every trial runs the same trainable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import ConfigError, _did_you_mean


@dataclass(frozen=True)
class Grid:
    """Every value, one trial each (``tune.grid_search``)."""

    values: tuple


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high] (``tune.uniform``)."""

    low: float = 0.0
    high: float = 1.0


@dataclass
class SearchPlan:
    """What to run: the parameter space, the sample count, an optional searcher and scheduler.

    ``per_seed``: the method keeps state across its trials (a searcher, a population), so each
    seed gets its own Tuner with ``train.seed`` fixed; otherwise seeds are one grid axis.
    """

    space: dict
    num_samples: int = 1
    searcher: Optional[tuple[str, Any]] = None  # ("random", seed) or ("optuna", sampler)
    scheduler: Optional[tuple[str, dict]] = None  # ("asha", kwargs) or ("pbt", kwargs)
    per_seed: bool = False
    expected_trials: int = 0  # per Tuner, for checks and progress


class SearchMethod:
    """Base class: ``name``, ``defaults`` (its budget keys) and ``plan``."""

    name = ""
    defaults: dict = {}
    per_seed = False

    def budget(self, given: Optional[dict]) -> dict:
        """The method's budget from ``sweep.methods.<name>``, unknown keys rejected."""
        given = dict(given or {})
        for key in given:
            if key not in self.defaults:
                raise ConfigError(f"unknown budget key 'sweep.methods.{self.name}.{key}'"
                                  f"{_did_you_mean(key, self.defaults)}; valid: {', '.join(self.defaults) or 'none'}")
        merged = {**self.defaults, **given}
        if "num_samples" in merged:
            n = merged["num_samples"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"num_samples = {n!r} for method {self.name}: it must be a whole number >= 1")
        return merged

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:  # pragma: no cover
        raise NotImplementedError


def seed_axis(seeds: Sequence[int], per_seed: bool):
    return seeds[0] if per_seed else Grid(tuple(seeds))


def weight_space(sites: Sequence[str]) -> dict:
    return {f"da_prob/{s}": Uniform(0.0, 1.0) for s in sites}
