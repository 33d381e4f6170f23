"""AdaLASE's q update (Takase & Karakida, arXiv 2408.13426), in two forms (docs/adalase.md).

Every hypergradient ``d = <g_val(theta_{t+1}), g_l(theta_t)>`` of the sampled site ``l`` gives a
step; every ``interval`` hypergradients the pending steps are applied, each ``q_j`` is clipped
to ``[eps, 1 - eps]`` with ``eps = min_rate_sum / K`` (K arms: sites, or (site, op) pairs in a
joint setting, docs/joint.md) and ``q`` is renormalised.
``q`` starts uniform.

- ``raw`` (the paper's rule): the step is ``eta * d`` added to ``q_l``; pending steps are
  averaged over the interval. How far q moves depends on the gradient scale, the learning
  rate and the number of updates.
- ``normalized`` (scale-free): ``z = (d - mean) / std`` against running statistics of ``d``
  over all sites, clipped to [-5, 5]; the step ``eta * z / (U * q_l)`` is added to ``log q_l``
  (an exponentiated-gradient step), where ``U`` is the number of updates in the run. Dividing
  by ``q_l`` makes the expected step of every site the same whatever its probability (only
  the sampled site is observed), and dividing by ``U`` makes ``eta`` the log-odds a site gains
  over the run when its hypergradient is one standard deviation above the average at every
  update: the same amount for any loss scale, learning rate, model, ``every`` or run length.
  ``U`` counts the hypergradients of the run (the engine passes it to :meth:`start`).

A non-finite ``d`` is skipped, counted in ``skipped`` and warned about once; q stays finite.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..config import DEFAULT_ETA, ExperimentConfig
from ._base import Named, Policy

Z_CLIP = 5.0


class AdaLASE(Policy):
    """The learned categorical over sites. The engine feeds it hypergradients via ``observe``."""

    name = "adalase"
    learns = True

    def __init__(self, sites: Sequence[Named], cfg: ExperimentConfig):
        super().__init__(sites, cfg)
        a = cfg.adalase
        self.form, self.eta, self.interval = a.update_form(), a.eta_value(), a.interval
        self.decay = a.norm_decay
        self.eps = a.min_rate_sum / len(sites)
        self.horizon = 1  # hypergradients in the whole run (normalized form); set by start()
        self.delta = np.zeros(len(sites))
        self.pending = 0
        self.stats = [0.0, 0.0, 0.0]  # normalized: decayed weight sum, weighted mean and sum of squared deviations of d
        self.skipped = 0
        if self.form == "normalized" and a.eta is not None and a.eta < 0.5:
            warnings.warn(
                f"adalase.eta = {a.eta} with the normalized update barely moves q: there eta is the "
                f"log-odds a site can gain over the whole run (default {DEFAULT_ETA['normalized']:g}); "
                "0.01-scale values belong to the raw update",
                UserWarning,
                stacklevel=2,
            )

    def start(self, updates: int) -> None:
        self.horizon = max(1, updates)

    def observe(self, site: int, dot: float) -> None:
        if not math.isfinite(dot):
            self.skipped += 1
            if self.skipped == 1:
                warnings.warn(
                    f"AdaLASE: a non-finite hypergradient ({dot}) was skipped; q is unchanged. "
                    "The count is adalase/skipped in the metrics.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        assert self.q is not None, "AdaLASE always has a q"
        if self.form == "raw":
            self.delta[site] += self.eta * dot
        else:
            self.delta[site] += self.eta * self._standardise(dot) / (self.horizon * self.q[site])
        self.pending += 1
        if self.pending == self.interval:
            self._apply()

    def _standardise(self, dot: float) -> float:
        """``(d - mean) / std`` against the exponentially weighted statistics of the earlier
        hypergradients (weights ``decay^age``, updated as West's weighted Welford recursion, which
        has no cancellation), then include ``d`` in them. 0 until the variance is positive.
        Plain floats: this runs at every step, where numpy's scalar calls cost more than the maths."""
        weight, mean, sq = self.stats
        z = 0.0
        if weight > 0 and sq > 0:
            z = min(max((dot - mean) / math.sqrt(sq / weight), -Z_CLIP), Z_CLIP)
        weight = self.decay * weight + 1.0
        delta = dot - mean
        mean += delta / weight
        sq = self.decay * sq + delta * (dot - mean)
        self.stats = [weight, mean, sq]
        return z

    def _apply(self) -> None:
        assert self.q is not None, "AdaLASE always has a q"
        if self.form == "raw":
            q = self.q + self.delta / self.interval
        else:
            q = self.q * np.exp(self.delta - self.delta.max())
            q = q / q.sum()
        q = np.clip(q, self.eps, 1 - self.eps)
        self.q = q / q.sum()
        self.delta[:] = 0
        self.pending = 0

    def state_dict(self) -> dict:
        assert self.q is not None, "AdaLASE always has a q"
        return {
            "q": self.q.tolist(),
            "delta": self.delta.tolist(),
            "pending": self.pending,
            "stats": [float(v) for v in self.stats],
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict) -> None:
        self.q = np.asarray(state["q"], dtype=np.float64)
        self.delta = np.asarray(state["delta"], dtype=np.float64)
        self.pending = int(state["pending"])
        self.stats = [float(v) for v in state.get("stats", [0.0, 0.0, 0.0])]
        self.skipped = int(state.get("skipped", 0))
