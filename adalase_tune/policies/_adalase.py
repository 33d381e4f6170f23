"""AdaLASE's q update (ALGORITHM.md section 3; Takase & Karakida, arXiv 2408.13426).

Each hypergradient ``d = <g_val(theta_{t+1}), g_l(theta_t)>`` for the sampled site ``l`` adds
``eta * d`` to a pending ``delta_l``; every ``interval`` hypergradients ``q += delta / interval``,
each ``q_j`` is clipped to ``[eps, 1 - eps]`` with ``eps = min_rate_sum / K`` (K sites), ``q`` is
renormalised and ``delta`` reset. ``q`` starts uniform.
"""
from __future__ import annotations

import numpy as np

from ._base import Policy


class AdaLASE(Policy):
    """The learned categorical over sites. The engine feeds it hypergradients via ``observe``."""

    name = "adalase"
    learns = True

    def __init__(self, sites, cfg):
        super().__init__(sites, cfg)
        a = cfg.adalase
        self.eta, self.interval, self.every = a.eta, a.interval, a.every_steps()
        self.eps = a.min_rate_sum / len(sites)
        self.delta = np.zeros(len(sites))
        self.pending = 0

    def wants_hypergradient(self, step: int) -> bool:
        return step % self.every == 0

    def observe(self, site: int, dot: float) -> None:
        self.delta[site] += self.eta * dot
        self.pending += 1
        if self.pending == self.interval:
            q = np.clip(self.q + self.delta / self.interval, self.eps, 1 - self.eps)
            self.q = q / q.sum()
            self.delta[:] = 0
            self.pending = 0

    def state_dict(self) -> dict:
        return {"q": self.q.tolist(), "delta": self.delta.tolist(), "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.q = np.asarray(state["q"], dtype=np.float64)
        self.delta = np.asarray(state["delta"], dtype=np.float64)
        self.pending = int(state["pending"])
