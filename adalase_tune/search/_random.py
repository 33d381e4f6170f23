"""``random``: N trials per seed, drawn uniformly from the search space (``space``: arm or weights)."""

from collections.abc import Sequence

from .. import keys
from ._base import RandomSearcher, SearchMethod, SearchPlan, search_space, seed_axis


class RandomSearch(SearchMethod):
    name = "random"
    defaults = {"num_samples": 8, "space": "arm"}

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        n = budget["num_samples"]
        searched = search_space(sites, budget["space"])
        space = {keys.SELECTION_METHOD: "probs", keys.TRAIN_SEED: seed_axis(seeds, False), **searched}
        return SearchPlan(space, num_samples=n, searcher=RandomSearcher(seeds[0]), expected_trials=n * len(seeds))
