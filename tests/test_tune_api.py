"""Ray Tune as its users expect: their own Tuner over the public trainable and search spaces, and
trial failures that raise (or, when asked, are tolerated). A real local Ray (``ray_local``)."""

import pytest
import torch
from ray import tune

from adalase_tune import ConfigError, TrialsFailed, build_data, search_space, sweep, tune_config, tune_trainable
from adalase_tune.cli import main
from adalase_tune.tuning import SweepOptions

from conftest import tiny_config

ARMS = ["input", "stage1", "stage2", "stage3", "stage4"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="train.device=cuda fails only where no GPU is visible")
# passes the driver's checks (they run on CPU, as the driver may have no GPU) and fails in every trial
CUDA_ONLY = "ConfigError: train.device = 'cuda', but no CUDA device is visible here; use auto or cpu"


def test_search_spaces_are_ray_tune_objects_nested_as_the_trainable_takes_them():
    random = search_space("random", ARMS, seeds=[0, 1])
    assert random["train"]["seed"] == {"grid_search": [0, 1]} and random["selection"] == {"method": "probs"}
    assert isinstance(random["da_pick"]["arm"], tune.search.sample.Categorical)
    assert random["da_pick"]["arm"].categories == ARMS
    share = random["da_pick"]["share"]
    assert isinstance(share, tune.search.sample.Float) and (share.lower, share.upper) == (0.0, 1.0)
    weights = search_space("asha", ARMS, budget={"space": "weights"})
    assert set(weights["da_prob"]) == set(ARMS) and weights["train"]["seed"] == {"grid_search": [0]}
    assert search_space("grid", ARMS)["selection"] == {"method": "fixed", "site": {"grid_search": [0, 1, 2, 3, 4]}}
    assert search_space("adalase", ARMS, budget={"eta": [1, 10]})["adalase"] == {"eta": {"grid_search": [1.0, 10.0]}}
    assert "train" not in search_space("optuna", ARMS, seeds=[0, 1])  # its searcher per seed sets train.seed
    with pytest.raises(ConfigError, match=r"seeds = \[0, 1\]: pbt keeps state across its trials"):
        search_space("pbt", ARMS, seeds=[0, 1])
    with pytest.raises(ConfigError, match="unknown budget key 'sweep.methods.random.population'"):
        search_space("random", ARMS, budget={"population": 4})
    cfg = tiny_config()
    assert search_space("random", cfg)["da_pick"]["arm"].categories == ARMS  # the model's arms
    with pytest.raises(ConfigError, match="grace_period = 5, but train.epochs = 2"):
        tune_config("asha", cfg, budget={"grace_period": 5})


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_your_own_tuner_with_the_public_trainable_and_search_space(ray_local, tmp_path):
    cfg = tiny_config(**{"data.n_train": 60})
    budget = {"num_samples": 3}
    space = search_space("random", cfg, budget=budget)
    space["train"]["lr"] = tune.choice([0.05, 0.1])  # any key of the experiment can be tuned as well
    trainable = tune.with_parameters(tune_trainable(cfg), data=build_data(cfg.data))  # the data, built once
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune_config("random", cfg, budget=budget),
        run_config=tune.RunConfig(name="own", storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    assert len(grid) == 3 and grid.errors == []
    for result in grid:
        assert result.config["da_pick"]["arm"] in ARMS and result.config["train"]["lr"] in (0.05, 0.1)
        m = result.metrics
        assert m["epoch"] == 2 and 0 <= m["best_val_acc"] <= 1 and 0 <= m["test_acc_at_best_val"] <= 1
        assert m["cost/sample_passes"] > 0
    best = grid.get_best_result()  # the metric and mode of tune_config: val/acc, max
    assert best.metrics["val/acc"] == max(r.metrics["val/acc"] for r in grid)


@pytest.mark.slow  # the fast tier's budget (issue 22)
@NO_GPU
def test_a_trial_error_raises_with_its_reason_unless_tolerated(ray_local, tmp_path):
    cfg = tiny_config(**{"train.device": "cuda", "train.epochs": 1, "data.n_train": 40})
    options = SweepOptions(seeds=[0, 1], storage=str(tmp_path / "ray"))
    with pytest.raises(TrialsFailed) as failed:
        sweep(cfg, "uniform", options, out=str(tmp_path / "out"), tracking_uri=None)
    assert str(failed.value) == f"2 of 2 trials failed, all with {CUDA_ONLY}"
    assert list(failed.value.reasons.values()) == [CUDA_ONLY] * 2
    assert all(key.startswith("uniform ") and len(key) == len("uniform 0123a_00000") for key in failed.value.reasons)
    assert len(failed.value.result.rows) == 2 and (tmp_path / "out" / "results.csv").is_file()
    again = SweepOptions(seeds=[0, 1], storage=str(tmp_path / "ray2"))
    tolerated = sweep(cfg, "uniform", again, tracking_uri=None, tolerate_failures=True).rows
    assert list(tolerated["status"]) == ["ERROR", "ERROR"] and list(tolerated["error"]) == [CUDA_ONLY] * 2


@pytest.mark.slow  # the fast tier's budget (issue 22)
@NO_GPU
def test_the_cli_exits_1_with_the_reason_unless_told_to_tolerate_failures(ray_local, tmp_path, capsys):
    args = [
        "sweep",
        "search_spaces/digits.yaml",
        "--method",
        "uniform",
        "--seeds",
        "1",
        "--set",
        "train.device=cuda",
        "--set",
        "train.epochs=1",
        "--set",
        "data.n_train=40",
        "--max-failures",
        "0",
        "--no-tracking",
    ]
    assert main([*args, "--storage", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert f"adalase-tune: error: 1 of 1 trials failed, all with {CUDA_ONLY}" in err
    assert main([*args, "--storage", str(tmp_path / "b"), "--tolerate-failures"]) == 0
    captured = capsys.readouterr()
    assert "uniform: 0/1 trials finished" in captured.out and f"ERROR: {CUDA_ONLY}" in captured.err
