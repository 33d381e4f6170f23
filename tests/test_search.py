"""Search methods as plans (no Ray): spaces derived from the sites, budgets, trial configs."""

import numpy as np
import pytest

from adalase_tune.config import ConfigError, ExperimentConfig
from adalase_tune.search import (
    METHODS,
    Choice,
    Grid,
    SearcherPerSeed,
    Uniform,
    nest,
    picked_q,
    site_weights,
    trial_config,
)

SITES = ["input", "stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_plans_over_the_sites(name):
    m = METHODS.get(name)
    seeds = [0] if m.per_seed else [0, 1]  # pbt's population: one Tuner per seed
    plan = m.plan(SITES, seeds, m.budget(None))
    assert plan.expected_trials >= 1
    keys = set(plan.space)
    assert "selection/method" in keys
    if isinstance(plan.searcher, SearcherPerSeed):  # a searcher per seed sets each trial's train/seed
        assert "train/seed" not in keys and plan.searcher.seeds == (0, 1)
        assert [s.seed for s in plan.searcher.searchers] == [0, 1]  # each seed's TPE seeded by it
        assert plan.num_samples == plan.expected_trials == 2 * plan.searcher.num_samples
    else:
        assert "train/seed" in keys
    searched = {k for k in keys if k.startswith(("da_prob/", "da_pick/"))}
    assert searched in (set(), {"da_pick/arm", "da_pick/share"})  # the default space: arm
    if searched:
        assert plan.space["da_pick/arm"] == Choice(tuple(SITES)) and plan.space["da_pick/share"] == Uniform(0.0, 1.0)
        weighted = m.plan(SITES, seeds, m.budget({"space": "weights"}))
        weights = {k for k in weighted.space if k.startswith(("da_prob/", "da_pick/"))}
        assert weights == {f"da_prob/{s}" for s in SITES}
        assert all(weighted.space[k] == Uniform(0.0, 1.0) for k in weights)
    if name == "grid":
        assert plan.space["selection/site"] == Grid((0, 1, 2, 3, 4))
    if name == "adalase_single":  # the paper's one-run form; `adalase` takes the config's (default: retrain)
        assert plan.space["adalase/retrain"] is False and plan.space["adalase/val_source"] == "train"
    if name == "adalase":
        assert "adalase/retrain" not in plan.space


def test_the_arm_space_reaches_every_arm_alone_uniform_and_what_lies_between():
    base = ExperimentConfig().to_dict()

    def q(arm, share):
        params = nest({"train/seed": 0, "selection/method": "probs", "da_pick/arm": arm, "da_pick/share": share})
        cfg = trial_config(base, params, SITES)
        assert cfg.selection.method == "probs"
        assert list(site_weights(params, SITES).values()) == pytest.approx(cfg.selection.weights)
        return list(cfg.selection.weights)

    assert q("stage2", 1.0) == [0, 0, 1, 0, 0]
    assert q("input", 0.0) == pytest.approx([0.2] * 5)
    assert q("stage4", 0.5) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.6])
    # the weights space rarely reaches a corner; the arm space puts a share >= 0.9 on a given arm
    # for share >= 0.875 (K = 5), i.e. with probability 0.125 / 5 = 0.025 per draw
    rng = np.random.default_rng(0)
    w = rng.random((20000, 5))
    assert ((w / w.sum(1, keepdims=True))[:, 0] >= 0.9).mean() < 0.001
    shares = rng.random(20000)
    arms = rng.integers(0, 5, 20000)
    reach = [(picked_q(SITES[a], sh, SITES)[0] >= 0.9) for a, sh in zip(arms, shares)]
    assert 0.015 < np.mean(reach) < 0.035


def test_the_search_space_is_checked():
    with pytest.raises(ConfigError, match=r"sweep.methods.random.space = 'arms': choose one of arm, weights \(did you"):
        METHODS.get("random").budget({"space": "arms"})
    with pytest.raises(ConfigError, match=r"sweep.methods.pbt.space = 'x'"):
        METHODS.get("pbt").budget({"space": "x"})
    with pytest.raises(ConfigError, match=r"sweep.methods.adalase.probe = 1.5: give a share in \(0, 1\]"):
        METHODS.get("adalase").budget({"probe": 1.5})
    with pytest.raises(ConfigError, match=r"unknown budget key 'sweep.methods.adalase_single.probe'"):
        METHODS.get("adalase_single").budget({"probe": 0.5})
    plan = METHODS.get("adalase").plan(SITES, [0, 1], METHODS.get("adalase").budget({"probe": [0.25, 1]}))
    assert plan.space["adalase/probe"] == Grid((0.25, 1.0)) and plan.expected_trials == 4


def test_trial_config_turns_weights_into_probs():
    base = ExperimentConfig().to_dict()
    params = nest(
        {
            "train/seed": 4,
            "selection/method": "probs",
            **{f"da_prob/{s}": w for s, w in zip(SITES, [0.1, 0.2, 0.3, 0.4, 0.5])},
        }
    )
    cfg = trial_config(base, params, SITES)
    assert cfg.train.seed == 4 and cfg.selection.method == "probs"
    assert cfg.selection.weights == (0.1, 0.2, 0.3, 0.4, 0.5)


def test_budget_keys_are_checked():
    with pytest.raises(ConfigError, match=r"unknown budget key 'sweep.methods.random.num_sample' \(did you mean"):
        METHODS.get("random").budget({"num_sample": 3})
    with pytest.raises(ConfigError, match=r"sweep.methods.optuna.num_samples = 0: it must be a whole number >= 1"):
        METHODS.get("optuna").budget({"num_samples": 0})
    with pytest.raises(ConfigError, match=r"sweep.methods.asha.grace_period = -1"):
        METHODS.get("asha").budget({"grace_period": -1})
    with pytest.raises(ConfigError, match=r"sweep.methods.pbt.population = 0"):
        METHODS.get("pbt").budget({"population": 0})
    with pytest.raises(ConfigError, match=r"sweep.methods.pbt.resample_probability = 2"):
        METHODS.get("pbt").budget({"resample_probability": 2})
    with pytest.raises(ConfigError, match=r"--method = 'optuan'.*did you mean 'optuna'"):
        METHODS.get("optuan")


def test_pbt_perturbations_are_clipped_to_the_space():
    from adalase_tune.tuning import clip_weights

    cfg = clip_weights({"da_prob": {"input": 1.14, "stage1": -0.1, "stage2": 0.5}, "train": {"seed": 0}})
    assert cfg["da_prob"] == {"input": 1.0, "stage1": 0.0, "stage2": 0.5} and cfg["train"] == {"seed": 0}
    cfg = clip_weights({"da_pick": {"arm": "input", "share": 1.2}})
    assert cfg["da_pick"] == {"arm": "input", "share": 1.0}
