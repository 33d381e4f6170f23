"""Faults, interruptions and bad input lose nothing: real Ray processes, real MLflow, real files."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from adalase_tune.checkpoint import CheckpointError, atomic_save, safe_load
from adalase_tune.cli import main
from adalase_tune.engine import Trainer
from adalase_tune.tracking import Tracking
from adalase_tune.trainable import make_trainable
from adalase_tune.tuning import SweepOptions, sweep

from conftest import tiny_config

HERE = Path(__file__).parent


class KillOnce(tune.Callback):
    """Kill a trial's worker process (SIGKILL, by its pid) right after its epoch-2 report."""

    def __init__(self):
        self.killed = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == 2 and not self.killed:
            os.kill(result["pid"], signal.SIGKILL)
            self.killed.append(result["pid"])


def test_killed_worker_restarts_from_its_checkpoint_and_matches(ray_local, tmp_path):
    cfg = tiny_config(**{"train.epochs": 4, "selection.method": "adalase"})
    killer = KillOnce()
    grids = sweep(cfg, "adalase", SweepOptions(seeds=[0], storage=str(tmp_path), max_failures=2, verbose=0),
                  callbacks=[killer])
    (result,) = list(grids[0])
    assert killer.killed and result.error is None
    df = result.metrics_dataframe
    assert df["pid"].iloc[-1] != killer.killed[0]  # it really ran on in a new process
    assert list(df["epoch"]).count(1) == 1  # restored from the checkpoint, not from scratch
    reference = Trainer(cfg).run()["history"][-1]
    last = df.iloc[-1]
    for key in ("train/loss", "val/acc", "test/acc", "adalase/q/stage1", "cost/sample_passes"):
        assert last[key] == pytest.approx(reference[key], rel=0, abs=0), key


def test_removing_a_worker_node_loses_no_trial(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "cluster_node_loss.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert out["removed"] and out["trials"] == 4 and out["errors"] == 0
    assert all(e == 4 for e in out["final_epochs"])
    assert all(n == 1 for n in out["epoch1_counts"])  # no trial with a checkpoint started from scratch


def _sweep_cmd(tmp_path, name):
    return [sys.executable, "-m", "adalase_tune", "sweep", "search_spaces/digits.yaml", "--method", "random",
            "--num-samples", "6", "--seeds", "1", "--max-concurrent", "2", "--set", "train.epochs=3",
            "--set", "data.n_train=60", "--set", "model.width=4", "--storage", str(tmp_path / "ray"),
            "--name", name, "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--experiment", "interrupt"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_sweep_resumes_without_rerunning_or_duplicating(tmp_path, sig):
    cmd = _sweep_cmd(tmp_path, "int")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    done_before = []
    deadline = time.time() + 300
    for line in proc.stderr:
        found = re.search(r" done: (\S+) \(", line)
        if found:
            done_before.append(found.group(1))
        if len(done_before) == 2 or time.time() > deadline:
            break
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    if sig == signal.SIGKILL:
        subprocess.run(["pkill", "-9", "-g", str(proc.pid)], check=False)  # what the shell would do to the group
    assert len(done_before) == 2
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "6/6 trials finished" in resumed.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([client.get_experiment_by_name("interrupt").experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert len(trials) == 6 and len({r.data.tags["ray.trial_id"] for r in trials}) == 6
    assert all(r.info.status == "FINISHED" for r in trials)
    assert sum(r.data.tags.get("run_kind") == "method" for r in runs) == 1
    for run in trials:  # every epoch logged once: nothing trained twice; the finished two not at all
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
        assert sorted(steps) == [1, 2, 3], (run.data.tags["ray.trial_id"], steps)
    finished_before = [r for r in trials if r.data.tags["ray.trial_id"] in done_before]
    assert len(finished_before) == 2


def test_nan_loss_fails_that_trial_only_with_the_reason_in_ray_and_mlflow(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path}/nan.db"
    tracking = Tracking(uri, "nan")
    parent = tracking.parent_run("lr-grid", "nan", "x")
    cfg = tiny_config(**{"train.epochs": 2})
    trainable = make_trainable(cfg.to_dict(), ["input", "stage1", "stage2", "stage3", "stage4"],
                               tracker_factory=tracking.trial_factory(parent))
    tuner = tune.Tuner(trainable, param_space={"train": {"lr": tune.grid_search([0.05, 1e30])}},
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="nan", verbose=0))
    grid = tuner.fit()
    by_lr = {r.config["train"]["lr"]: r for r in grid}
    assert by_lr[0.05].error is None and by_lr[0.05].metrics["epoch"] == 2
    assert by_lr[1e30].error is not None and "train/loss = nan" in str(by_lr[1e30].error)
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.params["train.lr"]: r for r in client.search_runs([tracking.experiment_id], "tags.run_kind = 'trial'")}
    assert runs["1e+30"].info.status == "FAILED"
    assert runs["1e+30"].data.tags["error"].startswith("NonFiniteLossError: train/loss = nan in epoch 1")
    assert runs["0.05"].info.status == "FINISHED"


def test_a_kill_during_save_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert safe_load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_truncated_checkpoint_is_named_in_a_clear_error(tmp_path, capsys):
    ck = tmp_path / "ck"
    args = ["train", "search_spaces/digits.yaml", "--quiet", "--no-tracking", "--set", "train.epochs=1",
            "--set", "data.n_train=60", "--checkpoint-dir", str(ck)]
    assert main(args) == 0
    data = (ck / "last.pt").read_bytes()
    (ck / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint '.*last.pt' is corrupted or truncated"):
        safe_load(ck / "last.pt")
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt' is corrupted or truncated" in err[0]


class Gadget:
    pass


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Gadget()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        safe_load(path)


def test_yaml_is_read_safely(tmp_path, capsys):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned > /tmp/adalase_pwned']\n")
    assert main(["train", str(path), "--quiet", "--no-tracking"]) == 2
    assert "YAML" in capsys.readouterr().err and not Path("/tmp/adalase_pwned").exists()


def _listening_addresses(port: int) -> set:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(addr)
    return found


def test_the_ui_binds_to_localhost_only(tmp_path):
    from test_tracking import free_port

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "adalase_tune", "ui", "--tracking-uri", f"sqlite:///{tmp_path}/u.db",
                           "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        deadline = time.time() + 120
        while not _listening_addresses(port):
            assert time.time() < deadline, "the UI did not start listening"
            time.sleep(0.5)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_local_ray_starts_no_dashboard(ray_local):
    import ray

    info = ray._private.worker.global_worker.node.address_info
    assert not info.get("webui_url")  # include_dashboard=False: nothing listens for the dashboard


def _malformed_cases(tmp: Path) -> list:
    bad_yaml = tmp / "syntax.yaml"
    bad_yaml.write_text("train:\n  epochs: [3\n")
    list_yaml = tmp / "list.yaml"
    list_yaml.write_text("- 1\n- 2\n")
    typo_yaml = tmp / "typo.yaml"
    typo_yaml.write_text("trian: {epochs: 3}\n")
    sweep_yaml = tmp / "sweep.yaml"
    sweep_yaml.write_text("sweep: {seeds: 0}\n")
    budget_yaml = tmp / "budget.yaml"
    budget_yaml.write_text("sweep: {methods: {random: {num_sample: 3}}}\n")
    import numpy as np

    mismatched = tmp / "mismatched.npz"
    np.savez(mismatched, x_train=np.zeros((5, 4)), y_train=np.zeros(4, int), x_test=np.zeros((2, 4)), y_test=np.zeros(2, int))
    nans = tmp / "nans.npz"
    np.savez(nans, x_train=np.full((5, 4), np.nan), y_train=np.zeros(5, int), x_test=np.zeros((2, 4)), y_test=np.zeros(2, int))
    labels = tmp / "labels.npz"
    np.savez(labels, x_train=np.zeros((5, 4)), y_train=-np.ones(5, int), x_test=np.zeros((2, 4)), y_test=np.zeros(2, int))
    not_npz = tmp / "junk.npz"
    not_npz.write_text("not a zip")
    blocker = tmp / "blocker"
    blocker.write_text("a file")
    d = "search_spaces/digits.yaml"
    t = ["train", d]
    s = ["sweep", d, "--method"]
    return [
        # (argv, words the one line must contain)
        (["train", str(bad_yaml)], ["line 3", "YAML syntax error"]),
        (["train", str(list_yaml)], ["expected a mapping of sections"]),
        (["train", str(typo_yaml)], ["'trian'", "did you mean 'train'"]),
        (["train", str(tmp / "missing.yaml")], ["does not exist"]),
        (t + ["--set", "train.epochs=three"], ["train.epochs = 'three'", "whole number"]),
        (t + ["--set", "train.epochs=-2"], ["train.epochs = -2", "[1, inf]"]),
        (t + ["--set", "train.lr=0"], ["train.lr = 0.0"]),
        (t + ["--set", "train.batch_size=0"], ["train.batch_size = 0"]),
        (t + ["--set", "train.momentum=1.5"], ["train.momentum = 1.5"]),
        (t + ["--set", "train.nesterov=maybe"], ["train.nesterov = 'maybe'", "true or false"]),
        (t + ["--set", "train.device=tpu"], ["train.device = 'tpu'"]),
        (t + ["--set", "data.val_fraction=1.5"], ["data.val_fraction = 1.5"]),
        (t + ["--set", "data.n_train=5000"], ["data.n_train = 5000", "use at most"]),
        (t + ["--set", "data.classes=[1,99]"], ["data.classes", "[99] do not occur"]),
        (t + ["--set", "data.name=npz", "--set", f"data.path={mismatched}"], ["y_train has shape (4,)", "5 rows"]),
        (t + ["--set", "data.name=npz", "--set", f"data.path={nans}"], ["x_train contains NaN"]),
        (t + ["--set", "data.name=npz", "--set", f"data.path={labels}"], ["negative labels"]),
        (t + ["--set", "data.name=npz", "--set", f"data.path={not_npz}"], ["not a readable .npz"]),
        (t + ["--set", "data.name=npz", "--set", f"data.path={tmp / 'none.npz'}"], ["no such file"]),
        (t + ["--set", "model.name=vgg"], ["model.name = 'vgg'", "choose one of"]),
        (t + ["--set", "model.checkpoint=/no/such.pt"], ["model.checkpoint = '/no/such.pt'", "--save-model"]),
        (t + ["--set", "augment.op=rotate"], ["augment.op = 'rotate'"]),
        (t + ["--set", "augment.strength=-1"], ["augment.strength = -1.0"]),
        (t + ["--set", "selection.method=fixed", "--set", "selection.site=9"], ["selection.site = 9", "sites 0..4"]),
        (t + ["--set", "selection.method=probs", "--set", "selection.weights=[1,-1,1,1,1]"], ["selection.weights"]),
        (t + ["--set", "adalase.eta=-0.5"], ["adalase.eta = -0.5"]),
        (t + ["--set", "adalase.interval=0"], ["adalase.interval = 0"]),
        (t + ["--set", "adalase.val_source=test"], ["adalase.val_source = 'test'", "train, holdout"]),
        (t + ["--set", "nosection"], ["expected key=value"]),
        (t + ["--resume"], ["--resume needs --checkpoint-dir"]),
        (t + ["--epochs", "3"], ["unrecognized arguments: --epochs 3"]),
        (["fly", d], ["invalid choice: 'fly'"]),
        (s + ["bogus"], ["--method = 'bogus'", "choose one of"]),
        (s + ["random", "--num-samples", "0"], ["--num-samples = 0"]),
        (s + ["random", "--num-samples", "x"], ["invalid int value: 'x'"]),
        (s + ["random", "--seeds", "0"], ["--seeds = 0"]),
        (s + ["random", "--storage", str(blocker / "x")], ["--storage", "cannot write there"]),
        (s + ["random", "--cpus-per-trial", "0"], ["--cpus-per-trial = 0"]),
        (["sweep", str(sweep_yaml), "--method", "random"], ["sweep.seeds = 0"]),
        (["sweep", str(budget_yaml), "--method", "random"], ["sweep.methods.random.num_sample"]),
        (["benchmark", d, "--methods", "adalase,grdi"], ["--method = 'grdi'", "did you mean 'grid'"]),
        (["benchmark", d, "--methods", "uniform,uniform"], ["listed twice"]),
        (["report", "--experiment", "nothing-here", "--tracking-uri", f"sqlite:///{tmp}/empty.db"],
         ["no MLflow store there"]),
    ]


def test_malformed_inputs_exit_2_with_one_line_before_ray_starts(tmp_path):
    cases = _malformed_cases(tmp_path)
    assert len(cases) >= 25
    proc = subprocess.run([sys.executable, str(HERE / "malformed_inputs.py"), json.dumps([c[0] for c in cases])],
                          capture_output=True, text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-2000:]
    for (argv, words), r in zip(cases, results):
        lines = r["stderr"].strip().splitlines()
        assert r["code"] == 2, (argv, r)
        assert len(lines) == 1 and lines[0].startswith("adalase-tune: error: "), (argv, r["stderr"])
        assert "Traceback" not in r["stderr"]
        for w in words:
            assert w in lines[0], (argv, w, lines[0])
        assert not r["ray"], f"Ray was started for {argv}"
