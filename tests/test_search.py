"""Search methods as plans (no Ray): spaces derived from the sites, budgets, trial configs."""

import pytest

from adalase_tune.config import ConfigError, ExperimentConfig
from adalase_tune.search import METHODS, Grid, Uniform, nest, trial_config

SITES = ["input", "stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_plans_over_the_sites(name):
    m = METHODS.get(name)
    seeds = [0] if m.per_seed else [0, 1]  # stateful methods get one Tuner per seed
    plan = m.plan(SITES, seeds, m.budget(None))
    assert plan.expected_trials >= 1
    keys = set(plan.space)
    assert "train/seed" in keys and "selection/method" in keys
    weights = {k for k in keys if k.startswith("da_prob/")}
    assert weights in (set(), {f"da_prob/{s}" for s in SITES})
    for k in weights:
        assert plan.space[k] == Uniform(0.0, 1.0)
    if name == "grid":
        assert plan.space["selection/site"] == Grid((0, 1, 2, 3, 4))


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
