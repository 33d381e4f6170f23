"""A search method of the tests' own, as docs/extending.md shows one: ``corners`` tries each of the
first ``num_arms`` arms alone (q one-hot: the ``arm`` space at share 1), one trial per arm and seed.
It reuses the existing spec types (a ``Grid`` over ``da_pick/arm``, the default random searcher), so
it needs no Ray code: this file and one registration line, ``METHODS.register(Corners.name)(Corners())``.
"""

from collections.abc import Sequence

from adalase_tune.search import PICK_ARM, PICK_SHARE, Grid, SearchMethod, SearchPlan, seed_axis


class Corners(SearchMethod):
    """``corners``: each of the first ``num_arms`` arms alone, per seed (the seeds one grid axis)."""

    name = "corners"
    defaults = {"num_arms": 2}  # a whole number >= 1: the base class checks it

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        arms = tuple(sites[: budget["num_arms"]])
        space = {
            "selection/method": "probs",
            "train/seed": seed_axis(seeds, self.per_seed),
            PICK_ARM: Grid(arms),
            PICK_SHARE: 1.0,
        }
        return SearchPlan(space, expected_trials=len(arms) * len(seeds))
