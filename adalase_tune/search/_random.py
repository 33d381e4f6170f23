"""``random``: N trials per seed, per-site weights ``da_prob/<site>`` ~ U[0, 1]."""

from ._base import RandomSearcher, SearchMethod, SearchPlan, seed_axis, weight_space


class RandomSearch(SearchMethod):
    name = "random"
    defaults = {"num_samples": 8}

    def plan(self, sites, seeds, budget):
        n = budget["num_samples"]
        space = {"selection/method": "probs", "train/seed": seed_axis(seeds, False), **weight_space(sites)}
        return SearchPlan(space, num_samples=n, searcher=RandomSearcher(seeds[0]), expected_trials=n * len(seeds))
