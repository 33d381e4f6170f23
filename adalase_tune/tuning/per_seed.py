"""Several seeds of a stateful search in one Tuner: a searcher, or a scheduler, per seed.

A search that learns from its trials (TPE, successive halving) is replicated per seed, so that
each seed is an independent run of the method. One Tuner per seed pays Tune's start (new trial
actors that import torch) once per seed, one seed after another. These wrappers run every seed's
trials side by side in one Tuner instead: each seed's trials are proposed by, and reported to,
that seed's own searcher, and stopped by its own scheduler, so no seed learns from another's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import ray.cloudpickle as cloudpickle
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.utils import flatten_dict

from .. import keys
from ..search import nest


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class SeedSearchers(Searcher):
    """One searcher per seed, ``num_samples`` trials each. The seeds take turns (the one with the
    fewest trials so far first), and each trial's ``train/seed`` is its searcher's seed.

    Example::

        SeedSearchers({0: OptunaSearch(sampler=tpe(0)), 1: OptunaSearch(sampler=tpe(1))}, num_samples=4)
    """

    def __init__(self, searchers: dict[int, Searcher], num_samples: int):
        super().__init__()
        self.searchers = searchers
        self.num_samples = num_samples
        self.made = dict.fromkeys(searchers, 0)
        self.seed_of: dict[str, int] = {}

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        self._metric, self._mode = metric, mode
        return all([s.set_search_properties(metric, mode, config, **spec) for s in self.searchers.values()])

    def suggest(self, trial_id: str) -> Optional[dict]:
        open_seeds = [s for s, n in self.made.items() if n < self.num_samples]
        if not open_seeds:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel, a string
        seed = min(open_seeds, key=lambda s: self.made[s])
        config = self.searchers[seed].suggest(trial_id)
        if not isinstance(config, dict):  # None: not now; or the seed's searcher has finished
            return config
        self.made[seed] += 1
        self.seed_of[trial_id] = seed
        return _merged(config, nest({keys.TRAIN_SEED: seed}))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.seed_of:
            self.searchers[self.seed_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        seed = self.seed_of.pop(trial_id, None)
        if seed is not None:
            self.searchers[seed].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(cloudpickle.load(f))


class SeedSchedulers(FIFOScheduler):
    """One scheduler per seed, made by ``make`` when the seed's first trial arrives. A trial's
    results go to the scheduler of its ``train/seed``, which alone decides whether it goes on;
    trials start first in, first out.

    Example::

        SeedSchedulers(functools.partial(ASHAScheduler, time_attr="training_iteration", max_t=40))
    """

    def __init__(self, make: Callable[[], TrialScheduler]):
        super().__init__()
        self.make = make
        self.by_seed: dict[Any, TrialScheduler] = {}
        self._mode: Optional[str] = None

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        self._metric, self._mode = metric, mode
        return True

    def _of(self, trial: Any) -> TrialScheduler:
        seed = flatten_dict(trial.config, delimiter="/")[keys.TRAIN_SEED]
        if seed not in self.by_seed:
            scheduler = self.make()
            scheduler.set_search_properties(self._metric, self._mode)
            self.by_seed[seed] = scheduler
        return self.by_seed[seed]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"seed {s}: {x.debug_string()}" for s, x in self.by_seed.items())
