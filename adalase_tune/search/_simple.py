"""One run per seed: adalase (search, then retrain with the learned q sharpened), adalase_single (q
learned during the one run), uniform and none; and the grid."""

from collections.abc import Sequence
from typing import Any, Optional

from .. import keys
from ..config import ConfigError
from ._base import Grid, SearchMethod, SearchPlan, seed_axis


class PerSeed(SearchMethod):
    """``uniform`` / ``none``: one trial per seed."""

    def __init__(self, name: str):
        self.name = name

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        space = {keys.SELECTION_METHOD: self.name, keys.TRAIN_SEED: seed_axis(seeds, False)}
        return SearchPlan(space, expected_trials=len(seeds))


class AdaLASEMethod(SearchMethod):
    """``adalase``: one trial per seed in the default form (search, then retrain: a probe of
    ``probe`` x the epochs, then a retrain with the probe's q sharpened and fixed); optionally a grid over
    ``adalase.eta`` or the probe's share. ``adalase_single``: the paper's one-run form (q learned
    during the run that is reported, pseudo-validation on the training samples)."""

    def __init__(
        self,
        name: str = "adalase",
        fixed: Optional[dict[str, Any]] = None,
        budget_keys: tuple[str, ...] = ("eta", "probe"),
    ):
        self.name, self.fixed = name, dict(fixed or {})
        self.defaults = dict.fromkeys(budget_keys)

    def check(self, key: str, value: Any) -> None:
        values = value if isinstance(value, (list, tuple)) else [value]
        hi = 1.0 if key == "probe" else float("inf")
        if value is not None and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= hi and (key != "probe" or v > 0)
            for v in values
        ):
            what = "a share in (0, 1]" if key == "probe" else "a number >= 0"
            raise ConfigError(f"sweep.methods.{self.name}.{key} = {value!r}: give {what} or a list of them")

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        space = {keys.SELECTION_METHOD: "adalase", keys.TRAIN_SEED: seed_axis(seeds, False), **self.fixed}
        trials = len(seeds)
        for key in self.defaults:
            if budget[key] is not None:
                values = budget[key] if isinstance(budget[key], (list, tuple)) else (budget[key],)
                space[keys.tune_key(f"adalase.{key}")] = Grid(tuple(float(v) for v in values))
                trials *= len(values)
        return SearchPlan(space, expected_trials=trials)


SINGLE_RUN = {keys.RETRAIN: False, keys.VAL_SOURCE: "train"}  # the paper's form


class SiteGrid(SearchMethod):
    """``grid``: one ``fixed`` trial per site, per seed (the exhaustive site search)."""

    name = "grid"

    def plan(self, sites: Sequence[str], seeds: Sequence[int], budget: dict) -> SearchPlan:
        space = {
            keys.SELECTION_METHOD: "fixed",
            keys.SELECTION_SITE: Grid(tuple(range(len(sites)))),
            keys.TRAIN_SEED: seed_axis(seeds, False),
        }
        return SearchPlan(space, expected_trials=len(sites) * len(seeds))
