"""Sweeps on a real local Ray (one instance for the test session)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from adalase_tune.config import ConfigError
from adalase_tune.search import METHODS
from adalase_tune.tuning import SweepOptions, sweep, trial_rows

from conftest import tiny_config

SITES = ["input", "stage1", "stage2", "stage3", "stage4"]
BUDGETS = {"random": {"num_samples": 3}, "optuna": {"num_samples": 3, "n_startup_trials": 2},
           "asha": {"num_samples": 3, "grace_period": 1, "reduction_factor": 2},
           "pbt": {"population": 3, "perturbation_interval": 1}, "adalase": {"eta": [0.01, 0.1]}}
EXPECTED = {"adalase": 4, "uniform": 2, "none": 2, "grid": 10, "random": 6, "optuna": 6, "asha": 6, "pbt": 6}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_end_to_end(method, ray_local, tmp_path):
    cfg = tiny_config(**{"train.epochs": 3 if method == "pbt" else 2, "data.n_train": 60})
    grids = sweep(cfg, method, SweepOptions(seeds=[0, 1], budgets=BUDGETS, storage=str(tmp_path), verbose=0))
    rows = [r for g in grids for r in trial_rows(g, method)]
    assert len(rows) == EXPECTED[method]
    assert all(r["status"] == "TERMINATED" for r in rows), [r["error"] for r in rows]
    assert {r["seed"] for r in rows} == {0, 1}
    for r in rows:
        params = json.loads(r["params"])
        if "da_prob" in params:
            assert set(params["da_prob"]) == set(SITES)
            assert all(0.0 <= w <= 1.0 for w in params["da_prob"].values())
        if method == "grid":
            assert params["selection"] == {"method": "fixed", "site": params["selection"]["site"]}
        assert 0.0 <= r["best_val_acc"] <= 1.0 and r["sample_passes"] > 0
    if method == "grid":
        assert sorted(json.loads(r["params"])["selection"]["site"] for r in rows) == sorted(list(range(5)) * 2)
    if method == "asha":  # ASHA stops weak trials: not every trial gets all epochs... or all do, never more
        assert max(r["epochs"] for r in rows) == 2
    if method in ("adalase", "uniform", "none", "grid"):
        assert all(r["epochs"] == 2 for r in rows)


def test_resume_does_not_rerun_finished_trials(ray_local, tmp_path):
    cfg = tiny_config(**{"data.n_train": 60})
    opts = SweepOptions(seeds=[0], budgets={"random": {"num_samples": 2}}, storage=str(tmp_path), name="r", verbose=0)
    first = trial_rows(sweep(cfg, "random", opts)[0], "random")
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        sweep(cfg, "random", opts)
    again = trial_rows(sweep(cfg, "random", SweepOptions(**{**opts.__dict__, "resume": True}))[0], "random")
    key = lambda rows: sorted((r["trial_id"], r["finished_at"], r["best_val_acc"]) for r in rows)  # noqa: E731
    assert key(again) == key(first)  # same trials, same finishing times: nothing ran again


def test_more_gpus_than_the_cluster_has_fails_at_once(ray_local, tmp_path):
    with pytest.raises(ConfigError, match=r"--gpus-per-trial = 8, but the largest node of this Ray cluster has 0 GPUs"):
        sweep(tiny_config(), "uniform", SweepOptions(gpus_per_trial=8, storage=str(tmp_path)))


def test_bad_sweep_options_fail_before_ray(tmp_path):
    with pytest.raises(ConfigError, match="--method = 'bogus'"):
        sweep(tiny_config(), "bogus", SweepOptions(storage=str(tmp_path)))
    with pytest.raises(ConfigError, match="--num-samples = 0"):
        SweepOptions(num_samples=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"--storage = .*cannot write there"):
        sweep(tiny_config(), "uniform", SweepOptions(storage=str(blocker / "sub")))


def test_benchmark_command_writes_the_comparison_files(ray_local, tmp_path):
    from adalase_tune.cli import main

    out = tmp_path / "out"
    code = main(["benchmark", "search_spaces/digits.yaml", "--methods", "adalase,uniform,random",
                 "--seeds", "2", "--set", "train.epochs=2", "--set", "data.n_train=60", "--set", "model.width=4",
                 "--storage", str(tmp_path / "ray"), "--out", str(out), "--no-tracking"])
    assert code == 0
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 2 + 2 + 2 * 4 and set(rows["method"]) == {"adalase", "uniform", "random"}
    report = (out / "report.md").read_text()
    for method in ("adalase", "uniform", "random"):
        assert f"| {method} | 2 |" in report
    assert (out / "cost_vs_accuracy.png").stat().st_size > 1000


def test_sweep_on_a_three_node_cluster_uses_several_nodes(tmp_path):
    script = Path(__file__).with_name("cluster_sweep.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert result["trials"] == 6 and result["errors"] == 0
    assert result["nodes_used"] >= 2 and result["nodes_alive"] == 3
