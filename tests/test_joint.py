"""AdaLASE and the searches over (site x op) and (site x strength) pairs (docs/joint.md)."""

import json

import numpy as np
import pandas as pd
import pytest

from adalase_tune import Trainer
from adalase_tune.arms import arm_names, build_arms, joint_layout, marginals
from adalase_tune.config import ConfigError, from_dict
from adalase_tune.engine import epoch_line
from adalase_tune.report import arm_finding, method_table, plot_q_history, top_arms
from adalase_tune.search import METHODS, site_weights, trial_config

from conftest import override

OPS = ["translate", "cutout", "noise"]
PAIRS = [f"{s}/{o}" for s in ("input", "hidden1", "hidden2") for o in OPS]


def motifs(epochs=3, **augment_and_more):
    """The known-answer task (an MLP on motifs), short: 2 epochs of 25 steps."""
    tree = {
        "data": {"name": "motifs", "n_train": 200},
        "model": {"name": "mlp", "hidden": [64, 64]},
        "augment": {},
        "selection": {"method": "adalase"},
        "train": {"epochs": epochs, "batch_size": 8, "lr": 0.05, "seed": 3, "device": "cpu"},
    }
    return from_dict(override(tree, {k.replace("__", "."): v for k, v in augment_and_more.items()}))


def _run(cfg) -> dict:
    return Trainer(cfg).run()


def _metrics(summary: dict) -> list:
    """Every epoch's metrics but the timings (which no two runs share)."""
    return [{k: v for k, v in m.items() if not k.endswith("_s")} for m in summary["history"]]


@pytest.mark.parametrize("preset", ["fast", "faithful", "normalized"])
def test_one_op_reduces_exactly_to_the_site_only_setting(preset):
    """augment.ops with one op, or augment.strengths with one strength, is the site-only run:
    the same q trajectory, metrics and metric names, in every update form."""
    base = {"adalase__preset": preset}
    plain = _run(motifs(augment__op="translate", **base))
    as_list = _run(motifs(augment__ops=["translate"], **base))
    one_strength = _run(motifs(augment__op="translate", augment__strengths=[0.2], **base))
    assert plain["arms"] == plain["sites"] == ["input", "hidden1", "hidden2"]
    assert np.ptp(plain["q_final"]) > 0  # q moved: the comparison is not between three uniform vectors
    for other in (as_list, one_strength):
        assert other["arms"] == plain["arms"]
        assert other["q_history"] == plain["q_history"]
        assert _metrics(other) == _metrics(plain)
    assert not any(k.startswith(("adalase/q_site", "adalase/q_op")) for k in plain["history"][-1])


def test_a_fixed_pair_trains_exactly_as_that_op_at_that_site():
    """The arm -> (site, op) decoding: fixed(hidden1/cutout) over three ops is the single-op run of
    cutout at hidden1; fixed(input/cutout_0.5) over two strengths is cutout of strength 0.5 at input."""
    pair = _run(motifs(augment__ops=OPS, selection__method="fixed", selection__site="hidden1/cutout"))
    single = _run(motifs(augment__op="cutout", selection__method="fixed", selection__site="hidden1"))
    assert _metrics(pair) == _metrics(single)
    by_index = _run(motifs(augment__ops=OPS, selection__method="fixed", selection__site=PAIRS.index("hidden1/cutout")))
    assert _metrics(by_index) == _metrics(single)
    strength = _run(
        motifs(
            augment__op="cutout",
            augment__strengths=[0.25, 0.5],
            selection__method="fixed",
            selection__site="input/cutout_0.5",
        )
    )
    single = _run(motifs(augment__op="cutout", augment__strength=0.5, selection__method="fixed", selection__site=0))
    assert _metrics(strength) == _metrics(single)
    other = _run(motifs(augment__op="cutout", augment__strength=0.25, selection__method="fixed", selection__site=0))
    assert _metrics(other) != _metrics(single)  # the strength reaches the op


def test_joint_adalase_learns_one_q_over_the_pairs_and_logs_its_marginals():
    cfg = motifs(augment__ops=OPS, adalase__preset="faithful", adalase__retrain=False)  # the learning itself
    trainer = Trainer(cfg)
    sampled, observed = [], []
    sample, observe = trainer.policy.sample, trainer.policy.observe
    trainer.policy.sample = lambda rng: sampled.append(sample(rng)) or sampled[-1]  # type: ignore[method-assign]
    trainer.policy.observe = lambda arm, dot: observed.append(arm) or observe(arm, dot)  # type: ignore[method-assign]
    summary = trainer.run()
    # faithful: a hypergradient every step, credited to the pair that step drew
    assert observed == sampled and len(set(sampled)) > 3
    assert summary["arms"] == PAIRS and summary["ops"] == OPS and summary["sites"] == ["input", "hidden1", "hidden2"]
    q = np.array(summary["q_final"])
    assert len(q) == 9 and q.sum() == pytest.approx(1.0) and np.ptp(q) > 1e-3
    assert (q >= 0.1 / 9 - 1e-12).all()  # the clip: eps = min_rate_sum / K over the K = 9 pairs
    last = summary["history"][-1]
    assert [last[f"adalase/q/{p}"] for p in PAIRS] == list(q)
    grid = q.reshape(3, 3)
    for i, site in enumerate(["input", "hidden1", "hidden2"]):
        assert last[f"adalase/q_site/{site}"] == pytest.approx(grid[i].sum())
    for j, op in enumerate(OPS):
        assert last[f"adalase/q_op/{op}"] == pytest.approx(grid[:, j].sum())
    assert summary["q_marginals"]["op"] == pytest.approx({op: grid[:, j].sum() for j, op in enumerate(OPS)})
    line = epoch_line({**last, "cost/device_s": 1.0}, 3, trainer.arms)
    assert "q_site input=" in line and "q_op translate=" in line and "input/translate" not in line


def test_arms_are_site_major_pairs_and_their_layout_is_recovered():
    from adalase_tune.config import AugmentConfig

    assert arm_names(["a", "b"], AugmentConfig(op="mixup")) == ["a", "b"]
    assert arm_names(["a", "b"], AugmentConfig(ops=("mixup", "cutout"))) == [
        "a/mixup",
        "a/cutout",
        "b/mixup",
        "b/cutout",
    ]
    assert arm_names(["a"], AugmentConfig(op="cutout", strengths=(0.25, 1.0))) == ["a/cutout_0.25", "a/cutout_1"]
    arms = build_arms(["a", "b"], ["x", "y", "z"])
    assert [(a.site, a.variant) for a in arms] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert joint_layout([a.name for a in arms]) == (["a", "b"], ["x", "y", "z"])
    assert joint_layout(["a", "b"]) is None and joint_layout(["a/x", "b/y"]) is None  # not every pair
    m = marginals([0.1, 0.2, 0.3, 0.0, 0.25, 0.15], [a.name for a in arms])
    assert m["site"] == pytest.approx({"a": 0.6, "b": 0.4}) and m["op"] == pytest.approx(
        {"x": 0.1, "y": 0.45, "z": 0.45}
    )
    with pytest.raises(ConfigError, match="augment.strengths"):
        AugmentConfig(ops=("mixup", "cutout"), strengths=(0.5,))


@pytest.mark.parametrize("method", ["grid", "random", "optuna", "asha", "pbt"])
def test_every_search_space_over_pairs_is_generated_from_the_config(method):
    """The searches weigh the same pairs AdaLASE chooses among: grid one fixed trial per pair,
    the others (in the ``weights`` space) one weight per pair, under keys Tune's searchers can
    split (no '/' in a name), or (in the default ``arm`` space) a choice among the pairs."""
    budget = METHODS.get(method).budget(None if method == "grid" else {"space": "weights"})
    plan = METHODS.get(method).plan(PAIRS, [0], budget)
    if method == "grid":
        assert plan.space["selection/site"].values == tuple(range(9)) and plan.expected_trials == 9
        return
    arm_plan = METHODS.get(method).plan(PAIRS, [0], METHODS.get(method).budget(None))
    assert arm_plan.space["da_pick/arm"].values == tuple(PAIRS)
    arm_params = {"selection": {"method": "probs"}, "train": {"seed": 0}, "da_pick": {"arm": PAIRS[4], "share": 1.0}}
    cfg = trial_config(motifs(augment__ops=OPS).to_dict(), arm_params, PAIRS)
    assert list(cfg.selection.weights) == [float(i == 4) for i in range(9)]
    keys = [k for k in plan.space if k.startswith("da_prob/")]
    assert keys == [f"da_prob/{p.replace('/', ':')}" for p in PAIRS]
    params = {"selection": {"method": "probs"}, "train": {"seed": 0}, "da_prob": {}}
    weights = np.linspace(0.1, 0.9, 9)
    for key, w in zip(keys, weights):
        params["da_prob"][key.split("/", 1)[1]] = float(w)
    cfg = trial_config(motifs(augment__ops=OPS).to_dict(), params, PAIRS)
    assert cfg.selection.method == "probs" and list(cfg.selection.weights) == pytest.approx(weights)
    assert list(site_weights(params, PAIRS)) == [f"da_prob/{p}" for p in PAIRS]
    assert list(site_weights(params, PAIRS).values()) == pytest.approx(weights)
    if method == "pbt":
        assert list(plan.scheduler.mutations) == keys


def test_the_report_says_which_pair_each_method_favours(tmp_path):
    rows = []
    for seed in (0, 1):
        for i, pair in enumerate(PAIRS):  # the grid: input/translate best on val
            rows.append({"method": "grid", "seed": seed, "best_val_acc": 0.9 if i == 0 else 0.5, "trial": i})
            rows[-1].update({f"da_prob/{p}": float(p == pair) for p in PAIRS})
        q = np.full(9, 0.05)
        q[0 if seed == 0 else 8] = 0.6
        rows.append({"method": "adalase", "seed": seed, "best_val_acc": 0.8, **{f"q/{p}": v for p, v in zip(PAIRS, q)}})
        rows.append({"method": "uniform", "seed": seed, "best_val_acc": 0.6, **{f"da_prob/{p}": 1.0 for p in PAIRS}})
    trials = pd.DataFrame(rows).assign(
        status="TERMINATED", test_acc_at_best_val=lambda d: d["best_val_acc"], device_s=1.0, sample_passes=100.0
    )
    trials["finished_at"] = np.arange(len(trials), dtype=float)
    tops = top_arms(trials, PAIRS)
    assert set(tops["method"]) == {"grid", "adalase"}  # uniform favours no pair
    table, _ = method_table(trials, 100.0)
    found = {r["method"]: r for r in arm_finding(trials, PAIRS, table, "input/translate")}
    assert found["grid"]["found"] == 2 and found["grid"]["cost"] == pytest.approx(9.0)
    assert found["adalase"]["found"] == 1 and found["adalase"]["tops"] == ["input/translate", "hidden2/noise"]
    assert found["adalase"]["share"] == pytest.approx((0.6 / q.sum() + 0.05 / q.sum()) / 2)
    plot_q_history([np.full(9, 1 / 9), q / q.sum()], PAIRS, tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 5000


@pytest.mark.slow
def test_joint_benchmark_under_ray_tune_logs_pairs_to_mlflow(ray_local, tmp_path):
    """AdaLASE, the grid and Optuna over (site x op) pairs through the CLI: one trial per pair for
    the grid, q per pair and its marginals in MLflow, the heat map and the pair table in the report.
    Slow tier (three methods, ten trials, the report's plots): the fast tier trains, plans and
    reports over pairs in process (the tests above) and runs a joint sweep on Ray into MLflow
    (test_joint_params.py)."""
    import mlflow

    from adalase_tune.cli import main

    config = tmp_path / "joint.yaml"
    config.write_text(
        json.dumps(
            {
                "data": {"name": "motifs", "n_train": 100},
                "model": {"name": "mlp", "hidden": [32, 32]},
                "augment": {"ops": ["translate", "noise"]},
                "train": {"epochs": 2, "batch_size": 20, "lr": 0.05},
                "sweep": {"methods": {"adalase": {}, "grid": {}, "optuna": {"num_samples": 3, "n_startup_trials": 2}}},
            }
        )
    )
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path}/m.db"
    code = main(
        ["benchmark", str(config), "--seeds", "1", "--storage", str(tmp_path / "ray"), "--out", str(out)]
        + ["--tracking-uri", uri, "--experiment", "joint"]
    )
    assert code == 0
    pairs = [f"{s}/{o}" for s in ("input", "hidden1", "hidden2") for o in ("translate", "noise")]
    rows = pd.read_csv(out / "results.csv")
    assert (rows["method"] == "grid").sum() == 6 and (rows["method"] == "optuna").sum() == 3
    grid = rows[rows["method"] == "grid"]
    assert sorted(grid[[f"da_prob/{p}" for p in pairs]].to_numpy().argmax(1)) == list(range(6))
    assert rows.loc[rows["method"] == "adalase", [f"q/{p}" for p in pairs]].sum(1).iloc[0] == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "## Which arm each method's selected configuration favours" in report and "joint_q.png" in report
    assert (out / "joint_q.png").stat().st_size > 5000
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("joint").experiment_id], max_results=100)
    learned = [r for r in runs if "adalase/q_op/noise" in r.data.metrics]
    assert len(learned) == 1
    metrics = learned[0].data.metrics
    assert {f"adalase/q/{p}" for p in pairs} <= set(metrics)
    assert sum(metrics[f"adalase/q/{p}"] for p in pairs) == pytest.approx(1.0)
    assert metrics["adalase/q_site/input"] == pytest.approx(
        metrics["adalase/q/input/translate"] + metrics["adalase/q/input/noise"]
    )
    assert [a.path for a in client.list_artifacts(learned[0].info.run_id)] == ["q_trajectory.png"]
    searched = [r for r in runs if r.data.params.get("selection.method") == "probs"]
    assert len(searched) == 3 and all({f"da_prob/{p}" for p in pairs} <= set(r.data.params) for r in searched)
