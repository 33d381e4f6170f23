"""Layer-selection policies, looked up by name (``selection.method``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import ExperimentConfig
from ..registry import Registry
from ._adalase import AdaLASE
from ._base import Named, Policy, q_movement, site_index
from ._static import Fixed, NoDA, Probs, Uniform, normalise_weights

POLICIES: Registry[type[Policy]] = Registry("selection.method")
for _cls in (NoDA, Fixed, Uniform, Probs, AdaLASE):
    POLICIES.register(_cls.name)(_cls)


def build_policy(cfg: ExperimentConfig, sites: Sequence[Named]) -> Policy:
    """The policy of ``cfg.selection.method`` over ``sites`` (validated against them)."""
    return POLICIES.get(cfg.selection.method)(sites, cfg)


__all__ = ["POLICIES", "Policy", "build_policy", "site_index", "normalise_weights", "q_movement"]
