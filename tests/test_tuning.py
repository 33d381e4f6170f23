"""Sweeps on a real local Ray (one instance for the test session), through the library API."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from adalase_tune.config import ConfigError
from adalase_tune.experiment import sweep
from adalase_tune.search import METHODS, picked_q
from adalase_tune.tuning import SweepOptions

from conftest import tiny_config

SITES = ["input", "stage1", "stage2", "stage3", "stage4"]
BUDGETS = {
    "random": {"num_samples": 3},
    "optuna": {"num_samples": 3, "n_startup_trials": 2},
    "asha": {"num_samples": 3, "grace_period": 1, "reduction_factor": 2},
    "pbt": {"population": 3, "perturbation_interval": 1},
    "adalase": {"eta": [1.0, 10.0]},
}
EXPECTED = {
    "adalase": 4,
    "adalase_single": 2,
    "uniform": 2,
    "none": 2,
    "grid": 10,
    "random": 6,
    "optuna": 6,
    "asha": 6,
    "pbt": 6,
}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_end_to_end(method, ray_local, tmp_path):
    cfg = tiny_config(**{"train.epochs": 3 if method == "pbt" else 2, "data.n_train": 60})
    rows = sweep(
        cfg, method, SweepOptions(seeds=[0, 1], budgets=BUDGETS, storage=str(tmp_path)), tracking_uri=None
    ).rows
    assert len(rows) == EXPECTED[method]
    assert (rows["status"] == "TERMINATED").all(), list(rows["error"])
    assert sorted(rows["seed"]) == sorted([0, 1] * (EXPECTED[method] // 2))  # each seed's own trials
    weights = [f"da_prob/{s}" for s in SITES]
    for r in rows.to_dict("records"):
        params = json.loads(r["params"])
        if "da_prob" in params:
            assert set(params["da_prob"]) == set(SITES)
            assert all(0.0 <= w <= 1.0 for w in params["da_prob"].values())
            assert [r[w] for w in weights] == [params["da_prob"][s] for s in SITES]  # the results.csv columns
        if "da_pick" in params:  # the arm space: the columns hold the q it makes
            assert params["da_pick"]["arm"] in SITES and 0.0 <= params["da_pick"]["share"] <= 1.0
            assert [r[w] for w in weights] == pytest.approx(picked_q(**params["da_pick"], sites=SITES))
        if method == "grid":
            assert params["selection"] == {"method": "fixed", "site": params["selection"]["site"]}
            assert [r[w] for w in weights] == [float(i == params["selection"]["site"]) for i in range(5)]
        if method.startswith("adalase"):
            assert abs(sum(r[f"q/{s}"] for s in SITES) - 1) < 1e-9
        assert 0.0 <= r["best_val_acc"] <= 1.0 and r["sample_passes"] > 0
    if method == "grid":
        assert sorted(json.loads(p)["selection"]["site"] for p in rows["params"]) == sorted(list(range(5)) * 2)
    if method in ("adalase_single", "uniform", "none", "grid"):
        assert (rows["epochs"] == 2).all()
    if method == "adalase":  # the default: a probe of 1 epoch, then the retrain of 2
        assert (rows["epochs"] == 3).all()


def test_a_sweep_on_a_real_local_ray_writes_rows_and_results_csv(ray_local, tmp_path):
    """The fast tier's end-to-end sweep: a real local Ray, a real trainable, results.csv."""
    cfg = tiny_config(**{"data.n_train": 60})
    out = tmp_path / "out"
    result = sweep(
        cfg,
        "random",
        SweepOptions(seeds=[0], budgets=BUDGETS, storage=str(tmp_path / "ray")),
        out=str(out),
        tracking_uri=None,
    )
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 3 and (rows["status"] == "TERMINATED").all() and len(result.rows) == 3
    assert rows["node_id"].notna().all() and (rows["epochs"] == 2).all()


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_asha_stops_weak_trials_early(ray_local, tmp_path):
    cfg = tiny_config(**{"train.epochs": 4, "data.n_train": 200, "model.width": 8, "train.lr": 0.1})
    options = SweepOptions(
        seeds=[0],
        budgets={"asha": {"num_samples": 6, "grace_period": 1, "reduction_factor": 2}},
        storage=str(tmp_path),
        max_concurrent=1,
    )
    rows = sweep(cfg, "asha", options, tracking_uri=None).rows
    assert (rows["status"] == "TERMINATED").all() and len(rows) == 6
    assert rows["epochs"].max() == 4 and rows["epochs"].min() < 4  # some ran to the end, some were stopped
    assert rows["epochs"].sum() < 6 * 4


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_resume_does_not_rerun_finished_trials(ray_local, tmp_path):
    cfg = tiny_config(**{"data.n_train": 60})
    opts = SweepOptions(seeds=[0], budgets={"random": {"num_samples": 2}}, storage=str(tmp_path), name="r")
    first = sweep(cfg, "random", opts, tracking_uri=None).rows
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        sweep(cfg, "random", opts, tracking_uri=None)
    another = r"--resume: 'r' was started with another config \(train.lr: 0.01 now, 0.05 before\)"
    with pytest.raises(ConfigError, match=another):
        sweep(
            tiny_config(**{"data.n_train": 60, "train.lr": 0.01}),
            "random",
            replace(opts, resume=True),
            tracking_uri=None,
        )
    again = sweep(cfg, "random", replace(opts, resume=True), tracking_uri=None).rows
    key = lambda rows: sorted(zip(rows["trial_id"], rows["finished_at"], rows["best_val_acc"]))  # noqa: E731
    assert key(again) == key(first)  # same trials, same finishing times: nothing ran again
    with pytest.raises(ConfigError, match=r"--resume: no experiment 'other'"):
        sweep(cfg, "random", replace(opts, resume=True, name="other"), tracking_uri=None)


def test_more_gpus_than_the_cluster_has_fails_at_once(ray_local, tmp_path):
    with pytest.raises(ConfigError, match=r"--gpus-per-trial = 8, but the largest node of this Ray cluster has 0 GPUs"):
        sweep(tiny_config(), "uniform", SweepOptions(gpus_per_trial=8, storage=str(tmp_path)), tracking_uri=None)


def test_bad_sweep_options_fail_before_ray(tmp_path):
    with pytest.raises(ConfigError, match="--method = 'bogus'"):
        sweep(tiny_config(), "bogus", SweepOptions(storage=str(tmp_path)), tracking_uri=None)
    with pytest.raises(ConfigError, match="--num-samples = 0"):
        SweepOptions(num_samples=0)
    for name in ("../x", "/abs", "a b", "quote'd", ".hidden"):
        with pytest.raises(ConfigError, match="--name = .*one path component"):
            SweepOptions(name=name)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"--storage = .*is a file, so no folder can be made there"):
        sweep(tiny_config(), "uniform", SweepOptions(storage=str(blocker / "sub")), tracking_uri=None)
    with pytest.raises(ConfigError, match=r"--storage = .*unknown scheme 'ftp'"):
        sweep(tiny_config(), "uniform", SweepOptions(storage="ftp://host/x"), tracking_uri=None)
    with pytest.raises(ConfigError, match=r"sweep.methods.asha.grace_period = 5, but train.epochs = 2"):
        sweep(
            tiny_config(),
            "asha",
            SweepOptions(storage=str(tmp_path), budgets={"asha": {"grace_period": 5}}),
            tracking_uri=None,
        )


@pytest.mark.slow
def test_benchmark_command_writes_the_comparison_files(ray_local, tmp_path):
    from adalase_tune.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "benchmark",
            "search_spaces/digits.yaml",
            "--methods",
            "adalase,uniform,random",
            "--seeds",
            "2",
            "--set",
            "train.epochs=2",
            "--set",
            "data.n_train=60",
            "--set",
            "model.width=4",
            "--storage",
            str(tmp_path / "ray"),
            "--out",
            str(out),
            "--no-tracking",
        ]
    )
    assert code == 0
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 2 + 2 + 2 * 4 and set(rows["method"]) == {"adalase", "uniform", "random"}
    report = (out / "report.md").read_text()
    for method in ("adalase", "uniform", "random"):
        assert f"| {method} | 2 |" in report
    assert "- splits: train 60, val 252, test 539 samples" in report
    assert "| adalase | uniform | 2 |" in report  # the paired differences
    assert (out / "cost_vs_accuracy.png").stat().st_size > 1000 and (out / "cost_to_accuracy.png").stat().st_size > 1000


@pytest.mark.slow
def test_sweep_on_a_three_node_cluster_uses_several_nodes(tmp_path):
    script = Path(__file__).with_name("cluster_sweep.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["trials"] == 6 and result["errors"] == 0
    assert result["nodes_used"] >= 2 and result["nodes_alive"] == 3


@pytest.mark.slow  # the fast tier's budget (issue 22)
@pytest.mark.parametrize("threads", [1, 2])
def test_train_and_a_sweep_trial_of_one_config_give_one_result(ray_local, tmp_path, threads):
    """Float sums depend on torch's thread count: both paths run cfg.train.threads, so the same
    config and seed give the same weights, hence the same accuracies, to the bit; rows record it.
    The fast tier runs 1 thread (with the caller at 3, so a path that left the caller's count would
    differ); 2 threads, a trial taking both CPUs, is in the slow tier."""
    import torch

    from adalase_tune.experiment import train

    cfg = tiny_config(**{"selection.method": "adalase", "train.threads": threads, "data.n_train": 80})
    torch.set_num_threads(3)  # whatever the caller had: the run sets its own
    alone = train(cfg, tracking_uri=None, progress=False)
    opts = SweepOptions(seeds=[0], storage=str(tmp_path), name=f"one{threads}", cpus_per_trial=threads)
    (row,) = sweep(cfg, "adalase", opts, tracking_uri=None).rows.to_dict("records")
    assert row["best_val_acc"] == alone["best_val_acc"] and row["test_acc_at_best_val"] == alone["test_acc_at_best_val"]
    assert row["threads"] == threads and row["device"] == "cpu" and row["torch"] == torch.__version__
    with pytest.raises(ConfigError, match=r"train.threads = 2, but --cpus-per-trial = 1: .*--cpus-per-trial 2"):
        two = cfg.replace(**{"train.threads": 2})
        sweep(two, "adalase", replace(opts, cpus_per_trial=1, name="x"), tracking_uri=None)


def test_an_experiment_stopped_before_its_first_trial_starts_afresh_on_resume(tmp_path):
    """Tune saved a state with no trial (a signal in a method's first instant): restoring it would run
    nothing, so its Ray state goes and the job starts afresh; our own meta stays."""
    from adalase_tune.tuning import _no_trial_yet

    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "experiment_state-1.json").write_text(json.dumps({"trial_data": [], "runner_data": {}}))
    (folder / "basic-variant-state-1.json").write_text("{}")
    (folder / "tuner.pkl").write_bytes(b"x")
    (folder / "adalase_tune.json").write_text("{}")
    assert _no_trial_yet(str(tmp_path), "job")
    assert sorted(p.name for p in folder.iterdir()) == ["adalase_tune.json"]
    (folder / "experiment_state-2.json").write_text(json.dumps({"trial_data": [["t"]], "runner_data": {}}))
    assert not _no_trial_yet(str(tmp_path), "job") and (folder / "experiment_state-2.json").exists()


def test_tuner_state_pickled_before_the_package_split_still_loads():
    """Tune pickles its callbacks by module path; an experiment started when MLflowTrials lived in
    the tuning module must still resume, and importing tuning must still not load MLflow."""
    import pickle
    import subprocess
    import sys

    from adalase_tune.tracking.trials import MLflowTrials

    assert pickle.loads(b"cadalase_tune.tuning\nMLflowTrials\n.") is MLflowTrials
    code = "import sys, adalase_tune.tuning; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="'nosuch'"):
        pickle.loads(b"cadalase_tune.tuning\nnosuch\n.")


def test_a_resume_forgets_an_older_checkpoint_that_is_gone(tmp_path):
    """A state that a full disk kept from being saved can list an older checkpoint that Ray deleted
    since; Ray's deletion of it once the resumed trial's next checkpoint arrives failed
    (FileNotFoundError), and the resume ended interrupted. The repair forgets it; the latest stays."""
    import shutil

    import ray.cloudpickle as cloudpickle
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from adalase_tune.tuning.recovery import _repoint

    def manager_with(paths: list) -> _CheckpointManager:
        m = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        for i, path in enumerate(paths):
            path.mkdir(parents=True, exist_ok=True)
            m.register_checkpoint(_TrainingResult(checkpoint=Checkpoint(str(path)), metrics={"epoch": i}))
        return m

    trial = tmp_path / "trial_00000"
    older, latest, after = (trial / f"checkpoint_00000{i}" for i in range(3))
    blob = cloudpickle.dumps(manager_with([older, latest])).hex()
    entry = ["t0", json.dumps({"checkpoint_manager": {"value": blob}})]
    assert _repoint(list(entry)) == ""  # nothing gone: left as it is
    shutil.rmtree(older)
    assert _repoint(entry) == "trial_00000"
    manager = cloudpickle.loads(bytes.fromhex(json.loads(entry[1])["checkpoint_manager"]["value"]))
    assert [r.checkpoint.path for r in manager._checkpoint_results] == [str(latest)]
    assert manager.latest_checkpoint_result.checkpoint.path == str(latest)
    after.mkdir()
    manager.register_checkpoint(_TrainingResult(checkpoint=Checkpoint(str(after)), metrics={"epoch": 2}))
    assert latest.is_dir() and after.is_dir()  # two kept, and no deletion of what was gone


def test_a_resume_cuts_a_result_json_that_a_full_disk_cut_off(tmp_path):
    """Tune reads each trial's result.json on resume; a last line cut off by a full disk stopped the
    resumed fit. The repair keeps the whole lines and drops the rest; whole files stay as they are."""
    from adalase_tune.tuning.recovery import repair_results

    whole, torn = tmp_path / "s1" / "trial_a" / "result.json", tmp_path / "s1" / "trial_b" / "result.json"
    for path in (whole, torn):
        path.parent.mkdir(parents=True)
    lines = [json.dumps({"epoch": i, "val/acc": 0.5}) + "\n" for i in (1, 2)]
    whole.write_text("".join(lines))
    torn.write_text("".join(lines) + lines[0][:9])
    assert repair_results(str(tmp_path), "s1") == [str(torn)]
    assert torn.read_text() == whole.read_text() == "".join(lines)


def test_a_torn_experiment_state_is_restored_with_the_searcher_state_of_its_time(tmp_path):
    """Ray writes the experiment state, then the searcher's. On a full disk the first was torn while
    a newer searcher state was written whole; the copy per file then put an old experiment state
    beside the new searcher state, which said trials had been made that the state did not list,
    and the resumed grid ran one trial of five (CI). The set is kept and put back whole."""
    import ray.cloudpickle as cloudpickle

    from adalase_tune.tuning.recovery import repair_state, snapshot

    folder = tmp_path / "s1"
    folder.mkdir()
    state, searcher = folder / "experiment_state-a.json", folder / "basic-variant-state-a.json"
    seen: dict = {}

    def write(trials: int) -> None:
        state.write_text(json.dumps({"trial_data": list(range(trials))}))
        searcher.write_bytes(cloudpickle.dumps({"counter": trials}))

    write(1)
    snapshot(folder, seen)
    write(2)
    state.write_text(state.read_text()[:9])  # torn: the set is not kept
    snapshot(folder, seen)
    assert repair_state(str(tmp_path), "s1") == [searcher.name, state.name]
    assert json.loads(state.read_text()) == {"trial_data": [0]}
    assert cloudpickle.loads(searcher.read_bytes()) == {"counter": 1}
    write(3)
    snapshot(folder, seen)
    assert repair_state(str(tmp_path), "s1") == []  # all parse: left as they are
    (folder / "experiment_state-b.json").write_text("{")  # a newer session's, torn: it goes
    assert repair_state(str(tmp_path), "s1") == [searcher.name, state.name]
    assert json.loads(state.read_text()) == {"trial_data": [0, 1, 2]}
    assert not (folder / "experiment_state-b.json").exists()


def test_a_searcher_per_seed_proposes_each_seeds_trials_and_learns_from_them_alone(tmp_path):
    """optuna's seeds share one Tuner: each seed's TPE proposes its num_samples trials (the seeds
    take turns) and sees only its own trials' results, across a save and restore."""
    from ray.tune.search import Searcher

    from adalase_tune.search import METHODS
    from adalase_tune.tuning.specs import param_space, ray_searcher

    m = METHODS.get("optuna")
    plan = m.plan(SITES, [3, 7], m.budget({"num_samples": 2, "n_startup_trials": 1}))
    searcher = ray_searcher(plan.searcher, None)
    assert searcher.set_search_properties("val/acc", "max", param_space(plan))
    seeds = []
    for i in range(4):
        config = searcher.suggest(f"t{i}")
        assert config["da_pick"]["arm"] in SITES and 0 <= config["da_pick"]["share"] <= 1
        seeds.append(config["train"]["seed"])
        searcher.on_trial_complete(f"t{i}", {"val/acc": i / 10, "da_pick/arm": config["da_pick"]["arm"]})
    assert seeds == [3, 7, 3, 7]
    assert searcher.suggest("t4") == Searcher.FINISHED
    studies = {s: sub._ot_study for s, sub in searcher.searchers.items()}
    assert [t.value for t in studies[3].trials] == [0.0, 0.2] and [t.value for t in studies[7].trials] == [0.1, 0.3]
    searcher.save(str(tmp_path / "s.pkl"))
    again = ray_searcher(plan.searcher, None)
    again.restore(str(tmp_path / "s.pkl"))
    assert again.made == {3: 2, 7: 2} and again.suggest("t5") == Searcher.FINISHED


def test_a_scheduler_per_seed_stops_a_trial_by_its_own_seeds_trials_only():
    """asha's seeds share one Tuner; a seed's trial is compared at a rung with that seed's trials
    alone: a trial far below the other seed's is not stopped for it."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from adalase_tune.search import ASHASpec
    from adalase_tune.tuning.specs import ray_scheduler

    scheduler = ray_scheduler(ASHASpec(grace_period=1, reduction_factor=2), 4)
    scheduler.set_search_properties("val/acc", "max")
    trials = {(s, i): Trial("x", config={"train": {"seed": s}}, stub=True) for s in (0, 1) for i in range(2)}
    for t in trials.values():
        scheduler.on_trial_add(None, t)

    def at_rung(seed: int, i: int, acc: float) -> str:
        return scheduler.on_trial_result(None, trials[seed, i], {"training_iteration": 1, "val/acc": acc})

    assert at_rung(1, 0, 0.9) == TrialScheduler.CONTINUE
    assert at_rung(0, 0, 0.2) == TrialScheduler.CONTINUE  # the first of seed 0 (one ASHA for both would stop it)
    assert at_rung(0, 1, 0.1) == TrialScheduler.STOP  # below seed 0's first at the rung
    assert at_rung(1, 1, 0.95) == TrialScheduler.CONTINUE
    assert sorted(scheduler.by_seed) == [0, 1]


def test_a_resume_of_an_experiment_an_earlier_version_ran_one_tuner_per_seed_says_so(tmp_path):
    """optuna and asha ran one Tuner per seed (<name>-seed<N>) before they ran their seeds in one:
    such an experiment is refused with what to do, before Ray starts, and left as it is."""
    old = tmp_path / "ray" / "o-seed0"
    old.mkdir(parents=True)
    (old / "experiment_state-x.json").write_text("{}")
    options = SweepOptions(seeds=[0, 1], storage=str(tmp_path / "ray"), name="o", resume=True)
    with pytest.raises(ConfigError, match=r"--resume: 'o' was started by an earlier adalase-tune.*o-seed<N>"):
        sweep(tiny_config(), "optuna", options, tracking_uri=None)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["o-seed0"]
    assert (old / "experiment_state-x.json").read_text() == "{}"
