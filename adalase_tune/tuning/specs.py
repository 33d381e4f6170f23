"""The Ray Tune object of each search spec (:mod:`adalase_tune.search`): one builder per spec type,
looked up by the spec's type (``functools.singledispatch``). A new kind of value, searcher or
scheduler is one spec class in ``search/`` plus one builder here; a spec without a builder is an
error that names it, never a silent default.

Example::

    @ray_scheduler.register(MedianSpec)
    def _(spec: MedianSpec, epochs: int) -> Any:
        return MedianStoppingRule(time_attr="training_iteration", grace_period=spec.grace_period)
"""

from __future__ import annotations

import functools
import random
from functools import singledispatch
from typing import Any, Optional

import numpy as np
from ray import tune

from .. import keys
from ..search import (
    ASHASpec,
    Choice,
    Grid,
    OptunaSearcher,
    PBTSpec,
    RandomSearcher,
    SearcherPerSeed,
    SearchPlan,
    Uniform,
    nest,
)


@singledispatch
def ray_value(spec: Any) -> Any:
    """A value of a search space as its Ray Tune object; a plain value (``"probs"``, a seed) as it is."""
    return spec


@ray_value.register(Grid)
def _grid(spec: Grid) -> Any:
    return tune.grid_search(list(spec.values))


@ray_value.register(Uniform)
def _uniform(spec: Uniform) -> Any:
    return tune.uniform(spec.low, spec.high)


@ray_value.register(Choice)
def _choice(spec: Choice) -> Any:
    return tune.choice(list(spec.values))


@singledispatch
def mutation(spec: Any) -> Any:
    """A value of PBT's ``hyperparam_mutations``: a distribution resampled as it is drawn."""
    return ray_value(spec)


@mutation.register(Choice)
def _choice_mutation(spec: Choice) -> Any:
    return list(spec.values)  # PBT's list form: resampled, or shifted to a neighbouring value


@singledispatch
def ray_searcher(spec: Any, max_concurrent: Optional[int]) -> Any:
    """A searcher spec as Tune's search algorithm, at most ``max_concurrent`` trials at once."""
    raise TypeError(f"unknown searcher spec {spec!r}: register its builder with tuning.specs.ray_searcher")


@ray_searcher.register(RandomSearcher)
def _random(spec: RandomSearcher, max_concurrent: Optional[int]) -> Any:
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent or 0)


@ray_searcher.register(OptunaSearcher)
def _optuna(spec: OptunaSearcher, max_concurrent: Optional[int]) -> Any:
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from ..search._optuna import tpe_sampler

    searcher = OptunaSearch(sampler=tpe_sampler(spec.seed, spec.n_startup_trials))
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


@ray_searcher.register(SearcherPerSeed)
def _per_seed(spec: SearcherPerSeed, max_concurrent: Optional[int]) -> Any:
    from ray.tune.search import ConcurrencyLimiter

    from .per_seed import SeedSearchers

    each = {seed: ray_searcher(inner, None) for seed, inner in zip(spec.seeds, spec.searchers)}
    searcher = SeedSearchers(each, spec.num_samples)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


@singledispatch
def ray_scheduler(spec: Any, epochs: int) -> Any:
    """A scheduler spec (None: first in, first out) as Tune's trial scheduler over runs of ``epochs``."""
    raise TypeError(f"unknown scheduler spec {spec!r}: register its builder with tuning.specs.ray_scheduler")


@ray_scheduler.register(type(None))
def _fifo(spec: None, epochs: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


@ray_scheduler.register(ASHASpec)
def _asha(spec: ASHASpec, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    from .per_seed import SeedSchedulers

    return SeedSchedulers(
        functools.partial(
            ASHAScheduler,
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    )


@ray_scheduler.register(PBTSpec)
def _pbt(spec: PBTSpec, epochs: int) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    random.seed(spec.seed)  # PBT perturbs with Python's global random module
    np.random.seed(spec.seed)
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=spec.perturbation_interval,
        hyperparam_mutations=nest({k: mutation(v) for k, v in spec.mutations.items()}),
        resample_probability=spec.resample_probability,
        custom_explore_fn=clip_weights,
    )


def clip_weights(config: dict) -> dict:
    """PBT perturbs by factors 0.8/1.2, which can leave [0, 1]: clip the site weights (or the
    picked arm's share) back."""
    for site, w in config.get(keys.DA_PROB, {}).items():
        config[keys.DA_PROB][site] = min(1.0, max(0.0, float(w)))
    if "share" in config.get(keys.DA_PICK, {}):
        config[keys.DA_PICK]["share"] = min(1.0, max(0.0, float(config[keys.DA_PICK]["share"])))
    return config


def param_space(plan: SearchPlan) -> dict:
    """A plan's space as Tune's ``param_space``: Ray objects, nested as Tune keeps them."""
    return nest({k: ray_value(v) for k, v in plan.space.items()})
