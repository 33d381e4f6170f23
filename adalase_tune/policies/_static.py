"""The static policies: none, fixed(i), uniform and probs(q)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..config import ConfigError, ExperimentConfig
from ._base import Named, Policy, site_index, unit


class NoDA(Policy):
    """``none``: no latent DA at all (the input pipeline is unchanged)."""

    name = "none"

    def __init__(self, sites: Sequence[Named], cfg: ExperimentConfig):
        super().__init__(sites, cfg)
        self.q = None


class Fixed(Policy):
    """``fixed``: always ``selection.site`` (index or name; a ``site/op`` pair in a joint setting)."""

    name = "fixed"

    def __init__(self, sites: Sequence[Named], cfg: ExperimentConfig):
        super().__init__(sites, cfg)
        self.q = np.zeros(len(sites))
        self.q[site_index(cfg.selection.site, sites, cfg.model.name)] = 1.0


class Uniform(Policy):
    """``uniform``: an arm drawn uniformly each step (Manifold Mixup's rule over all sites)."""

    name = "uniform"


def normalise_weights(
    weights: Optional[Sequence[float]],
    n_sites: int,
    model_name: str,
    key: str = "selection.weights",
    what: str = "sites",
) -> np.ndarray:
    """Per-arm weights ``w`` in [0, inf) to ``q = w / sum(w)``. All-zero weights are refused: they
    could mean "no latent DA" (``none``) as well as "uniform", and a run should not guess."""
    if weights is None or len(weights) != n_sites:
        got = "none" if weights is None else f"{len(weights)}"
        one = "(site, op) pair, site-major" if what != "sites" else "site"
        raise ConfigError(f"{key} has {got} values, but {model_name} has {n_sites} {what}; give one weight per {one}")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ConfigError(f"{key} = {list(weights)}: weights must be finite and >= 0")
    if w.sum() == 0:
        raise ConfigError(
            f"{key} = {list(weights)}: all weights are 0; for no latent DA use selection.method=none, "
            "for an even draw selection.method=uniform (or equal weights)"
        )
    return w / w.sum()


class Probs(Policy):
    """``probs``: ``q = w / sum(w)`` from ``selection.weights``, fixed for the run."""

    name = "probs"

    def __init__(self, sites: Sequence[Named], cfg: ExperimentConfig):
        super().__init__(sites, cfg)
        self.q = normalise_weights(cfg.selection.weights, len(sites), cfg.model.name, what=unit(sites))
