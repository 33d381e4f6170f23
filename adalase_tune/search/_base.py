"""The search-method contract: a method turns the model's sites, the seeds and its budget into a
:class:`SearchPlan`, a Ray-free description that ``adalase_tune.tuning`` turns into Ray Tune
objects (each spec type has its builder there, ``tuning.specs``; a spec without one is an error,
never a silent default). This package imports neither Ray nor Optuna at import time.

Keys are Tune's flat names (``train/seed``, ``selection/method``). The searches weigh the arms
in one of two spaces (``sweep.methods.<name>.space``, docs/search_spaces.md):

- ``arm`` (the default): a categorical choice of one arm, ``da_pick/arm``, and the share of q it
  gets on top of uniform, ``da_pick/share`` in [0, 1]: ``q = share * onehot(arm) + (1 - share) /
  K``. It reaches every arm alone (share 1), uniform (share 0) and everything between.
- ``weights``: a weight per arm, ``da_prob/<site>`` in [0, 1] (per pair, ``da_prob/<site>:<op>``,
  in a joint setting); a trial uses ``q = w / sum(w)``. With K arms a corner is hard to reach:
  for K = 3, P(q_arm >= 0.9) is about 0.002. The methods plan over the arms' names
(``sites``: the sites, or the ``<site>/<op>`` pairs, :mod:`adalase_tune.arms`).
Every trial runs the same trainable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..config import ConfigError, _did_you_mean
from ..keys import PICK_ARM, PICK_SHARE, weight_key


class SearcherSpec:
    """Base of a searcher spec: what proposes a Tuner's trials. Each subclass has one builder of its
    Ray object in ``tuning.specs`` (``ray_searcher.register``)."""


class SchedulerSpec:
    """Base of a scheduler spec: what stops or perturbs a Tuner's trials. Each subclass has one
    builder of its Ray object in ``tuning.specs`` (``ray_scheduler.register``)."""

    def checkpoint_every(self) -> Optional[int]:
        """Epochs between the checkpoints the scheduler needs (it moves them between trials), else None."""
        return None

    def check_epochs(self, epochs: int) -> None:
        """Raise :class:`ConfigError` when the settings cannot work with runs of ``epochs`` epochs."""


@dataclass(frozen=True)
class Grid:
    """Every value, one trial each (``tune.grid_search``)."""

    values: tuple


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high] (``tune.uniform``)."""

    low: float = 0.0
    high: float = 1.0


@dataclass(frozen=True)
class Choice:
    """One of the values, drawn uniformly (``tune.choice``)."""

    values: tuple


@dataclass(frozen=True)
class RandomSearcher(SearcherSpec):
    """Tune's basic variant generator (grid and random values), seeded."""

    seed: int


@dataclass(frozen=True)
class OptunaSearcher(SearcherSpec):
    """Optuna's TPE (seeded, ``search._optuna.tpe_sampler``) through Ray Tune's ``OptunaSearch``."""

    seed: int
    n_startup_trials: int


@dataclass(frozen=True)
class SearcherPerSeed(SearcherSpec):
    """A searcher per seed in one Tuner: ``searchers[i]`` proposes the ``num_samples`` trials of
    ``seeds[i]`` and learns from them alone; it sets each trial's ``train/seed``, so the plan's space
    leaves that key out."""

    seeds: tuple
    searchers: tuple
    num_samples: int


@dataclass(frozen=True)
class ASHASpec(SchedulerSpec):
    """Asynchronous successive halving over epochs, one scheduler per seed (``train/seed``): a
    seed's trials are stopped by comparison with that seed's trials only."""

    grace_period: int
    reduction_factor: int

    def check_epochs(self, epochs: int) -> None:
        """A grace period no run of ``epochs`` outlives cannot stop a trial early."""
        if self.grace_period > epochs:
            raise ConfigError(
                f"sweep.methods.asha.grace_period = {self.grace_period}, but train.epochs = {epochs}: "
                "no trial could be stopped early; lower it"
            )


@dataclass(frozen=True)
class PBTSpec(SchedulerSpec):
    """Population Based Training; ``mutations`` maps flat keys to their resampling space."""

    perturbation_interval: int
    resample_probability: float
    mutations: dict
    seed: int

    def checkpoint_every(self) -> Optional[int]:
        """PBT exploits a donor's checkpoint at every perturbation: one is needed there."""
        return self.perturbation_interval

    def check_epochs(self, epochs: int) -> None:
        """A perturbation interval as long as the run never perturbs the population."""
        if self.perturbation_interval >= epochs:
            raise ConfigError(
                f"sweep.methods.pbt.perturbation_interval = {self.perturbation_interval}, but train.epochs = "
                f"{epochs}: the population would never be perturbed; lower it below train.epochs"
            )


@dataclass
class SearchPlan:
    """What to run in one Tuner: the parameter space, the sample count, a searcher and a scheduler.

    Example::

        SearchPlan({"selection/method": "probs", "train/seed": 0, **weight_space(sites)}, num_samples=8)
    """

    space: dict
    num_samples: int = 1
    searcher: SearcherSpec = field(default_factory=lambda: RandomSearcher(0))
    scheduler: Optional[SchedulerSpec] = None
    expected_trials: int = 0  # per Tuner, for checks and progress

    def checkpoint_every(self) -> Optional[int]:
        """Epochs between the checkpoints the scheduler needs (PBT exploits them), else None."""
        return None if self.scheduler is None else self.scheduler.checkpoint_every()

    def check_epochs(self, epochs: int) -> None:
        """Scheduler settings that cannot work with runs of ``epochs``, before Ray starts."""
        if self.scheduler is not None:
            self.scheduler.check_epochs(epochs)


class SearchMethod:
    """Base class: ``name``, ``defaults`` (its budget keys, checked) and ``plan``.

    ``per_seed``: the method keeps state across its trials that cannot be kept apart by seed within
    one Tuner, so each seed gets its own Tuner with ``train.seed`` fixed; otherwise the seeds share
    one Tuner: a grid axis, with a searcher per seed (:class:`SearcherPerSeed`) or a scheduler per
    seed (ASHA's) where the method learns. PBT is per seed: its members exploit the members that
    run beside them, and in one Tuner the trials running together would be of different seeds.
    """

    name = ""
    defaults: dict = {}
    per_seed = False

    def budget(self, given: Optional[dict]) -> dict:
        """The method's budget from ``sweep.methods.<name>``, unknown keys and bad values rejected."""
        given = dict(given or {})
        for key in given:
            if key not in self.defaults:
                raise ConfigError(
                    f"unknown budget key 'sweep.methods.{self.name}.{key}'"
                    f"{_did_you_mean(key, self.defaults)}; valid: {', '.join(self.defaults) or 'none'}"
                )
        merged = {**self.defaults, **given}
        for key, value in merged.items():
            self.check(key, value)
        return merged

    def check(self, key: str, value: Any) -> None:
        """Whole-number budget keys must be >= 1, ``space`` one of SPACES; subclasses check their others."""
        if key == "space":
            if value not in SPACES:
                raise ConfigError(
                    f"sweep.methods.{self.name}.space = {value!r}: choose one of {', '.join(SPACES)}"
                    f"{_did_you_mean(str(value), SPACES)}"
                )
            return
        whole = isinstance(self.defaults.get(key), int) and not isinstance(self.defaults.get(key), bool)
        if whole and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"sweep.methods.{self.name}.{key} = {value!r}: it must be a whole number >= 1")

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:  # pragma: no cover
        raise NotImplementedError


def seed_axis(seeds: Sequence[int], per_seed: bool) -> Union[int, Grid]:
    return seeds[0] if per_seed else Grid(tuple(seeds))


def weight_space(sites: Sequence[str]) -> dict:
    """One weight in [0, 1] per arm (site, or (site, op) pair)."""
    return {weight_key(s): Uniform(0.0, 1.0) for s in sites}


SPACES = ("arm", "weights")


def arm_space(sites: Sequence[str]) -> dict:
    """A categorical choice of the arm and the share of q it gets beyond uniform."""
    return {PICK_ARM: Choice(tuple(sites)), PICK_SHARE: Uniform(0.0, 1.0)}


def search_space(sites: Sequence[str], kind: str) -> dict:
    """The searched keys of the space ``kind`` (one of SPACES) over the arms ``sites``."""
    return arm_space(sites) if kind == "arm" else weight_space(sites)


def picked_q(arm: str, share: float, sites: Sequence[str]) -> list[float]:
    """The q of an ``arm`` space point: ``share`` on ``arm`` on top of a uniform rest."""
    k = len(sites)
    share = min(1.0, max(0.0, float(share)))
    return [(1 - share) / k + (share if s == arm else 0.0) for s in sites]
