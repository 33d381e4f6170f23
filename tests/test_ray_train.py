"""One trial across several workers on Ray Train (gloo on CPU): `train --workers 2` equals one
worker, a killed multi-worker run resumes from Ray Train's checkpoint, and a sweep with
--workers-per-trial 2 gives one MLflow run per trial. Real processes, real Ray, real MLflow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from adalase_tune.config import load_config
from adalase_tune.engine import Trainer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "search_spaces/digits.yaml")
# MLP and a per-sample op: two workers are one worker, up to float summation order
EXACT = ["--set", "model.name=mlp", "--set", "augment.op=translate", "--set", "selection.method=adalase"]


def _cli(*args):
    return [sys.executable, "-m", "adalase_tune", *args]


def _kill_when(cmd: list, ready, timeout: float = 600) -> None:
    """Start ``cmd`` in its own process group; SIGKILL the group once ``ready()`` holds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed: make it longer"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _single_worker(overrides: list) -> dict:
    sets = [overrides[i + 1] for i in range(0, len(overrides), 2)]
    trainer = Trainer(load_config(CONFIG, sets))
    return trainer.run()


def test_train_with_two_workers_killed_mid_run_resumes_and_equals_one_worker(tmp_path):
    long = [*EXACT, "--set", "train.epochs=8", "--set", "data.n_train=null", "--set", "model.width=32"]
    ck, db = tmp_path / "ck", tmp_path / "m.db"
    cmd = _cli("train", CONFIG, "--workers", "2", *long, "--checkpoint-dir", str(ck), "--out", str(tmp_path / "s.json"))
    cmd += ["--tracking-uri", f"sqlite:///{db}", "--experiment", "w"]
    # Ray Train commits a checkpoint when its snapshot names it (a kill before that restarts the run)
    _kill_when(cmd, lambda: (ck / "train/checkpoint_manager_snapshot.json").is_file())

    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # no --resume: refused, nothing lost
    assert refused.returncode == 2 and "add --resume" in refused.stderr
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the 2-worker run" in done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    # the default form: a probe of 4 epochs, then the retrain of 8
    assert summary["workers"] == 2 and summary["epochs"] == 12 and 1 <= summary["restored_after_epoch"] < 12

    one = _single_worker(long)
    np.testing.assert_allclose(summary["q_history"], one["q_history"], atol=1e-4)
    assert summary["best_val_acc"] == pytest.approx(one["best_val_acc"], abs=1e-4)
    assert summary["cost"]["sample_passes"] == one["cost"]["sample_passes"]

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("w").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["workers"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == list(range(1, 13))


def test_a_sweep_of_two_worker_trials_resumes_after_a_driver_kill(tmp_path):
    storage, db = tmp_path / "ray", tmp_path / "m.db"
    cmd = _cli(
        "sweep", CONFIG, "--method", "uniform", "--seeds", "2", "--workers-per-trial", "2",
        "--set", "train.epochs=6", "--set", "data.n_train=null", "--set", "model.name=mlp", "--set", "model.width=32",
        "--storage", str(storage), "--name", "dp", "--checkpoint-s", "0", "--out", str(tmp_path / "out"),
        "--tracking-uri", f"sqlite:///{db}", "--experiment", "dp",
    )  # fmt: skip
    _kill_when(cmd, lambda: any((storage / "dp" / "train").glob("*/checkpoint_manager_snapshot.json")))
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "uniform: 2/2 trials finished" in done.stdout

    rows = pd.read_csv(tmp_path / "out/results.csv")
    assert len(rows) == 2 and (rows["status"] == "TERMINATED").all() and (rows["epochs"] == 6).all()
    restored = []
    for result in storage.glob("dp/*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        assert all(r["workers"] == 2 for r in reports)
        restored += [r["restored_after_epoch"] for r in reports]
    assert max(restored) >= 1  # a trial continued from Ray Train's checkpoint, not from scratch

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("dp").experiment_id])
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" and r.data.tags["workers"] == "2" for r in trials)
    for run in trials:  # every epoch logged once, across the kill
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == list(range(1, 7))


def test_ctrl_c_on_train_with_workers_exits_130_with_the_resume_hint_and_no_mlflow_run(tmp_path):
    """Ray Train's own Ctrl-C handler would abort the run and exit 1 without a word."""
    ck, db = tmp_path / "ck", tmp_path / "m.db"
    cmd = _cli("train", CONFIG, "--workers", "2", *EXACT, "--set", "train.epochs=200", "--checkpoint-dir", str(ck))
    cmd += ["--tracking-uri", f"sqlite:///{db}", "--experiment", "c"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (ck / "train/checkpoint_manager_snapshot.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("adalase-tune: interrupted")]
    assert len(ours) == 1 and "--checkpoint-dir" in ours[0] and "--resume" in ours[0], err[-3000:]
    assert "Traceback" not in err
    if db.is_file():  # written only when training ends
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name("c")
        assert exp is None or not client.search_runs([exp.experiment_id])
