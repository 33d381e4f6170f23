"""Extending adalase_tune with a search method: one file (tests/toy_method.py) and one registration
line, run through a real ``sweep`` on a local Ray (docs/extending.md, "A search method")."""

import pytest
from toy_method import Corners

from adalase_tune import sweep
from adalase_tune.config import ConfigError
from adalase_tune.experiment import arms_of, parse_methods
from adalase_tune.search import METHODS
from adalase_tune.tuning import SweepOptions

from conftest import tiny_config


@pytest.fixture
def corners():
    """``corners`` registered for one test (other tests run over the built-in methods only)."""
    METHODS.register(Corners.name)(Corners())  # the one registration line
    yield METHODS.get(Corners.name)
    METHODS._items.pop(Corners.name)


def test_a_registered_method_is_listed_and_checked_like_a_built_in(corners):
    assert METHODS.names()[-1] == "corners"  # registration order: after the built-ins
    assert parse_methods(None)[-1] == "corners"  # a benchmark's default methods: every registered one
    assert parse_methods("grid,corners") == ["grid", "corners"]
    with pytest.raises(ConfigError, match=r"unknown budget key 'sweep.methods.corners.num_arm'"):
        corners.budget({"num_arm": 3})
    with pytest.raises(ConfigError, match=r"sweep.methods.corners.num_arms = 0"):
        corners.budget({"num_arms": 0})
    plan = corners.plan(["a", "b", "c"], [0, 1], corners.budget(None))
    assert plan.expected_trials == 4 and plan.space["da_pick/arm"].values == ("a", "b")


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_a_new_method_runs_through_a_real_sweep(ray_local, corners, tmp_path):
    cfg = tiny_config(**{"train.epochs": 1, "data.n_train": 40})
    arms = arms_of(cfg)
    options = SweepOptions(seeds=[0], storage=str(tmp_path / "ray"))
    rows = sweep(cfg, "corners", options, tracking_uri=None).rows
    assert len(rows) == 2 and set(rows["method"]) == {"corners"} and set(rows["status"]) == {"TERMINATED"}
    weights = rows[[f"da_prob/{a}" for a in arms]].to_numpy()
    assert sorted(weights.argmax(1)) == [0, 1]  # each of the first two arms alone
    assert (weights.max(1) == 1.0).all() and weights.sum(1).tolist() == [1.0, 1.0]
    assert (rows["best_val_acc"] > 0).all() and (rows["epochs"] == 1).all()
