"""What a selection policy chooses among: sites, or (site, op) pairs (docs/joint.md).

With one op (``augment.op``) an arm is a site and is named after it (``input``). With several
ops (``augment.ops``) or several strengths of one op (``augment.strengths``) an arm is a
(site, variant) pair, named ``<site>/<variant>`` (``input/translate``, ``hidden1/cutout_0.25``),
site-major: every variant of site 0, then of site 1, and so on. Policies, searches and reports
only ever see the arms, so one op is exactly the site-only setting of earlier versions.

Example::

    arms = build_arms(["input", "hidden1"], variant_labels(cfg.augment))
    [a.name for a in arms]  # ['input/translate', 'input/cutout', 'hidden1/translate', 'hidden1/cutout']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import numpy.typing as npt

from .config import AugmentConfig, ConfigError, _did_you_mean
from .ops import OPS, Op, get_op


@dataclass(frozen=True)
class Arm:
    """One choice of the policy: DA at ``site`` with the op variant ``variant``."""

    name: str
    site: int
    variant: int


def variant_labels(cfg: AugmentConfig) -> list[str]:
    """The op variants' labels: the ops' names, or ``<op>_<strength>`` per strength."""
    if cfg.ops:
        return list(cfg.ops)
    if cfg.strengths:
        return [cfg.op] if len(cfg.strengths) == 1 else [f"{cfg.op}_{s:g}" for s in cfg.strengths]
    return [cfg.op]


def ops_text(cfg: AugmentConfig) -> str:
    """The op setting in words: ``mixup``, or the variants a joint setting chooses among."""
    labels = variant_labels(cfg)
    return labels[0] if len(labels) == 1 else f"joint over {', '.join(labels)}"


def build_ops(cfg: AugmentConfig) -> list[Op]:
    """One op per variant, in :func:`variant_labels` order (unknown names fail with the valid ones)."""
    if cfg.ops:
        for name in cfg.ops:
            if name not in OPS:
                raise ConfigError(
                    f"augment.ops = {list(cfg.ops)}: no op {name!r}{_did_you_mean(name, OPS.names())}; "
                    f"choose from {', '.join(OPS.names())}"
                )
        return [get_op(name) for name in cfg.ops]
    if cfg.strengths:
        return [get_op(cfg.op, s) for s in cfg.strengths]
    return [get_op(cfg.op, cfg.strength)]


def build_arms(sites: Sequence[str], variants: Sequence[str]) -> list[Arm]:
    """The arms over ``sites`` x ``variants``; with one variant, the sites themselves."""
    if len(variants) == 1:
        return [Arm(s, i, 0) for i, s in enumerate(sites)]
    return [Arm(f"{s}/{v}", i, j) for i, s in enumerate(sites) for j, v in enumerate(variants)]


def arm_names(sites: Sequence[str], cfg: AugmentConfig) -> list[str]:
    return [a.name for a in build_arms(sites, variant_labels(cfg))]


def joint_layout(names: Sequence[str]) -> Optional[tuple[list[str], list[str]]]:
    """``(sites, variants)`` when ``names`` are the arms of a joint setting (``<site>/<variant>``,
    every pair present, site-major); None for plain sites."""
    if not names or not all("/" in n for n in names):
        return None
    pairs = [n.rsplit("/", 1) for n in names]
    sites = list(dict.fromkeys(p[0] for p in pairs))
    variants = list(dict.fromkeys(p[1] for p in pairs))
    if [f"{s}/{v}" for s in sites for v in variants] != list(names):
        return None
    return sites, variants


def as_grid(q: npt.ArrayLike, n_sites: int) -> np.ndarray:
    """A site-major vector over arms as a (sites x variants) matrix."""
    q = np.asarray(q, dtype=np.float64)
    return q.reshape(n_sites, -1)


def marginals(q: npt.ArrayLike, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """The joint q's marginals ``{"site": {site: p}, "op": {variant: p}}``; empty for plain sites."""
    layout = joint_layout(names)
    if layout is None:
        return {}
    sites, variants = layout
    grid = as_grid(q, len(sites))
    return {
        "site": {s: float(p) for s, p in zip(sites, grid.sum(1))},
        "op": {v: float(p) for v, p in zip(variants, grid.sum(0))},
    }
