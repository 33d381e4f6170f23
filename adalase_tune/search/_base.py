"""The search-method contract: a method turns the model's sites, the seeds and its budget into a
:class:`SearchPlan`, a Ray-free description that ``adalase_tune.tuning`` turns into Ray Tune
objects (an unknown spec kind there is an error, never a silent default).

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
from typing import TYPE_CHECKING, Any, Optional, Union

from ..config import ConfigError, _did_you_mean

if TYPE_CHECKING:
    from optuna.samplers import TPESampler


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
class RandomSearcher:
    """Tune's basic variant generator (grid and random values), seeded."""

    seed: int


@dataclass(frozen=True)
class OptunaSearcher:
    """Optuna's TPE through Ray Tune's ``OptunaSearch``; the sampler comes from ``sampler()``."""

    seed: int
    n_startup_trials: int

    def sampler(self) -> TPESampler:
        from ._optuna import tpe_sampler

        return tpe_sampler(self.seed, self.n_startup_trials)


@dataclass(frozen=True)
class ASHASpec:
    """Asynchronous successive halving over epochs."""

    grace_period: int
    reduction_factor: int


@dataclass(frozen=True)
class PBTSpec:
    """Population Based Training; ``mutations`` maps flat keys to their resampling space."""

    perturbation_interval: int
    resample_probability: float
    mutations: dict
    seed: int


Searcher = Union[RandomSearcher, OptunaSearcher]
Scheduler = Union[ASHASpec, PBTSpec]


@dataclass
class SearchPlan:
    """What to run in one Tuner: the parameter space, the sample count, a searcher and a scheduler."""

    space: dict
    num_samples: int = 1
    searcher: Searcher = field(default_factory=lambda: RandomSearcher(0))
    scheduler: Optional[Scheduler] = None
    expected_trials: int = 0  # per Tuner, for checks and progress

    def checkpoint_every(self) -> Optional[int]:
        """Epochs between the checkpoints the scheduler needs (PBT exploits them), else None."""
        return self.scheduler.perturbation_interval if isinstance(self.scheduler, PBTSpec) else None


class SearchMethod:
    """Base class: ``name``, ``defaults`` (its budget keys, checked) and ``plan``.

    ``per_seed``: the method keeps state across its trials (a searcher, a population), so each
    seed gets its own Tuner with ``train.seed`` fixed; otherwise the seeds are one grid axis.
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


def weight_name(arm: str) -> str:
    """An arm's weight name in the search space: the arm, with the ``/`` of a joint arm
    (``input/translate``) as ``:``, since Tune's searchers split nested keys on ``/``."""
    return arm.replace("/", ":")


def weight_key(arm: str) -> str:
    """The search-space key of an arm's weight: ``da_prob/<weight_name(arm)>``."""
    return "da_prob/" + weight_name(arm)


def weight_space(sites: Sequence[str]) -> dict:
    """One weight in [0, 1] per arm (site, or (site, op) pair)."""
    return {weight_key(s): Uniform(0.0, 1.0) for s in sites}


SPACES = ("arm", "weights")
PICK_ARM, PICK_SHARE = "da_pick/arm", "da_pick/share"


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
