"""``optuna``: TPE (seeded) over the search space (``space``: arm or weights), through Ray Tune's OptunaSearch.

Every Optuna call of adalase_tune lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import keys
from ._base import OptunaSearcher, SearchMethod, SearchPlan, search_space

if TYPE_CHECKING:
    from optuna.samplers import TPESampler


def tpe_sampler(seed: int, n_startup_trials: int) -> TPESampler:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


class OptunaTPE(SearchMethod):
    name = "optuna"
    defaults = {"num_samples": 8, "n_startup_trials": 4, "space": "arm"}
    per_seed = True

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        (seed,) = seeds
        n = budget["num_samples"]
        space = {keys.SELECTION_METHOD: "probs", keys.TRAIN_SEED: seed, **search_space(sites, budget["space"])}
        return SearchPlan(
            space, num_samples=n, searcher=OptunaSearcher(seed, min(budget["n_startup_trials"], n)), expected_trials=n
        )
