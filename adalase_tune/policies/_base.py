"""The selection-policy contract (docs/algorithm.md).

A policy picks the arm of each training step: ``sample(rng)`` returns an arm index or ``None``
(no latent DA). An arm is a site, or a (site, op) pair in a joint setting (:mod:`adalase_tune.arms`);
the policies only see the arms' names. ``probs()`` is the current categorical distribution over
arms. Learning policies also take hypergradient observations; static ones ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol, Union

import numpy as np
import numpy.typing as npt

from ..config import ConfigError, ExperimentConfig


class Named(Protocol):
    """What a policy sees of an arm (an :class:`~adalase_tune.arms.Arm`, a
    :class:`~adalase_tune.sites.SiteInfo`): its name."""

    @property
    def name(self) -> str: ...


class Policy:
    """Base class: a fixed categorical ``q`` over arms. Subclasses set ``q`` in ``__init__``."""

    name = ""
    learns = False  # True: the engine computes hypergradients for it
    skipped = 0  # learning policies: non-finite hypergradients skipped so far

    def __init__(self, sites: Sequence[Named], cfg: ExperimentConfig):
        self.sites = list(sites)
        self.q: Optional[np.ndarray] = np.full(len(sites), 1.0 / len(sites))

    def probs(self) -> Optional[np.ndarray]:
        return None if self.q is None else self.q.copy()

    def sample(self, rng: np.random.Generator) -> Optional[int]:
        if self.q is None:
            return None
        # inverse-CDF draw: one uniform number, ~40x cheaper per step than rng.choice(p=q)
        cdf = np.cumsum(self.q)
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(self.q) - 1)

    def start(self, updates: int) -> None:
        """Called once before training (learning policies): how many hypergradients the run will give."""

    def observe(self, site: int, dot: float) -> None:
        """Take one hypergradient ``<g_val(theta_{t+1}), g_site(theta_t)>`` (learning policies)."""

    def state_dict(self) -> dict:
        return {"q": None if self.q is None else self.q.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.q = None if state["q"] is None else np.asarray(state["q"], dtype=np.float64)


def q_movement(q: npt.ArrayLike) -> dict[str, float]:
    """How far ``q`` is from uniform: the largest ``|q_i - 1/K|`` and ``KL(q || uniform)`` in nats."""
    q = np.asarray(q, dtype=np.float64)
    k = len(q)
    nz = q > 0
    return {"max_dev": float(np.abs(q - 1.0 / k).max()), "kl": float((q[nz] * np.log(q[nz] * k)).sum())}


def unit(sites: Sequence[Named]) -> str:
    """What the arms are, for messages: sites, or (site, op) pairs."""
    from ..arms import joint_layout

    return "sites" if joint_layout([s.name for s in sites]) is None else "(site, op) pairs"


def site_index(
    site: Union[int, str, None], sites: Sequence[Named], model_name: str, key: str = "selection.site"
) -> int:
    """Resolve an arm (a site, or a ``site/op`` pair) given by index or name, with an error that
    lists the valid ones. ``sites``: anything with a ``name``."""
    names = [s.name for s in sites]
    listing = f"{model_name} has {unit(sites)} 0..{len(sites) - 1} ({', '.join(names)})"
    if isinstance(site, str) and not site.lstrip("-").isdigit():
        if site not in names:
            raise ConfigError(f"{key} = {site!r}, but {listing}")
        return names.index(site)
    if site is None:
        raise ConfigError(f"{key} = None: selection.method=fixed needs a site; {listing}")
    index = int(site)
    if not 0 <= index < len(sites):
        raise ConfigError(f"{key} = {index}, but {listing}")
    return index
