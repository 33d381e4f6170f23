"""One run per seed: adalase (q learned inside the trial), uniform and none; and the grid."""

from ..config import ConfigError
from ._base import Grid, SearchMethod, SearchPlan, seed_axis


class PerSeed(SearchMethod):
    """``uniform`` / ``none``: one trial per seed."""

    def __init__(self, name: str):
        self.name = name

    def plan(self, sites, seeds, budget):
        space = {"selection/method": self.name, "train/seed": seed_axis(seeds, False)}
        return SearchPlan(space, expected_trials=len(seeds))


class AdaLASEMethod(SearchMethod):
    """``adalase``: one trial per seed, optionally a small grid over ``adalase.eta``."""

    name = "adalase"
    defaults = {"eta": None}

    def check(self, key, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        if value is not None and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise ConfigError(f"sweep.methods.adalase.eta = {value!r}: give a number >= 0 or a list of them")

    def plan(self, sites, seeds, budget):
        space = {"selection/method": "adalase", "train/seed": seed_axis(seeds, False)}
        etas = budget["eta"]
        if etas is not None:
            etas = tuple(etas) if isinstance(etas, (list, tuple)) else (etas,)
            space["adalase/eta"] = Grid(tuple(float(e) for e in etas))
        return SearchPlan(space, expected_trials=len(seeds) * (len(etas) if etas else 1))


class SiteGrid(SearchMethod):
    """``grid``: one ``fixed`` trial per site, per seed (the exhaustive site search)."""

    name = "grid"

    def plan(self, sites, seeds, budget):
        space = {
            "selection/method": "fixed",
            "selection/site": Grid(tuple(range(len(sites)))),
            "train/seed": seed_axis(seeds, False),
        }
        return SearchPlan(space, expected_trials=len(sites) * len(seeds))
