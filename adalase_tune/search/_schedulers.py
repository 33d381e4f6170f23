"""``asha`` (random search, weak trials stopped early) and ``pbt`` (Population Based Training
over the search space, as Population Based Augmentation does over its probabilities)."""

from collections.abc import Sequence
from typing import Any

from .. import keys
from ..config import ConfigError
from ._base import ASHASpec, PBTSpec, RandomSearcher, SearchMethod, SearchPlan, search_space, seed_axis


class ASHA(SearchMethod):
    name = "asha"
    defaults = {"num_samples": 12, "grace_period": 1, "reduction_factor": 3, "space": "arm"}

    def check(self, key: str, value: Any) -> None:
        super().check(key, value)
        if key == "reduction_factor" and value < 2:
            raise ConfigError(
                f"sweep.methods.asha.reduction_factor = {value}: it must be >= 2 (each rung keeps 1/factor)"
            )

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        """``num_samples`` random points per seed in one Tuner, each seed halved by its own scheduler."""
        n = budget["num_samples"]
        space = {
            keys.SELECTION_METHOD: "probs",
            keys.TRAIN_SEED: seed_axis(seeds, False),
            **search_space(sites, budget["space"]),
        }
        return SearchPlan(
            space,
            num_samples=n,
            searcher=RandomSearcher(seeds[0]),
            scheduler=ASHASpec(budget["grace_period"], budget["reduction_factor"]),
            expected_trials=n * len(seeds),
        )


class PBT(SearchMethod):
    name = "pbt"
    defaults = {"population": 4, "perturbation_interval": 3, "resample_probability": 0.25, "space": "arm"}
    per_seed = True

    def check(self, key: str, value: Any) -> None:
        if key == "resample_probability":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"sweep.methods.pbt.resample_probability = {value!r}: it must lie in [0, 1]")
            return
        super().check(key, value)

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        (seed,) = seeds
        n = budget["population"]
        space = {keys.SELECTION_METHOD: "probs", keys.TRAIN_SEED: seed, **search_space(sites, budget["space"])}
        spec = PBTSpec(
            budget["perturbation_interval"],
            float(budget["resample_probability"]),
            search_space(sites, budget["space"]),
            seed,
        )
        return SearchPlan(space, num_samples=n, searcher=RandomSearcher(seed), scheduler=spec, expected_trials=n)
