"""``optuna``: TPE (seeded) over the search space (``space``: arm or weights), through Ray Tune's OptunaSearch.

Every Optuna call of adalase_tune lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import keys
from ._base import OptunaSearcher, SearcherPerSeed, SearchMethod, SearchPlan, search_space

if TYPE_CHECKING:
    from optuna.samplers import TPESampler


def tpe_sampler(seed: int, n_startup_trials: int) -> TPESampler:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


class OptunaTPE(SearchMethod):
    name = "optuna"
    defaults = {"num_samples": 8, "n_startup_trials": 4, "space": "arm"}

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        """One TPE per seed (seeded by it), ``num_samples`` trials each, side by side in one Tuner."""
        n = budget["num_samples"]
        space = {keys.SELECTION_METHOD: "probs", **search_space(sites, budget["space"])}
        tpe = tuple(OptunaSearcher(s, min(budget["n_startup_trials"], n)) for s in seeds)
        total = n * len(seeds)
        return SearchPlan(
            space, num_samples=total, searcher=SearcherPerSeed(tuple(seeds), tpe, n), expected_trials=total
        )
