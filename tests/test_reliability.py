"""Faults and bad input lose nothing: real Ray processes, real MLflow, real files.

Interrupts (signals at several instants) are in test_interrupts.py; clusters in test_cluster.py.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from adalase_tune.checkpoint import CheckpointError, atomic_save, safe_load
from adalase_tune.cli import main
from adalase_tune.engine import Trainer
from adalase_tune.experiment import sweep
from adalase_tune.tuning import SweepOptions

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


@pytest.mark.slow
def test_killed_worker_restarts_from_its_checkpoint_and_matches(ray_local, tmp_path):
    cfg = tiny_config(**{"train.epochs": 4, "selection.method": "adalase"})
    killer = KillOnce()
    rows = sweep(
        cfg,
        "adalase",
        SweepOptions(seeds=[0], storage=str(tmp_path), max_failures=2, checkpoint_s=0),
        tracking_uri=None,
        callbacks=[killer],
    ).rows
    assert killer.killed and list(rows["status"]) == ["TERMINATED"]
    (trial,) = tune.ExperimentAnalysis(str(tmp_path / "adalase")).trials
    last = trial.last_result
    assert last["pid"] != killer.killed[0]  # it really ran on in a new process
    reference = Trainer(cfg).run()["history"][-1]
    for key in ("train/loss", "val/acc", "test/acc", "adalase/q/stage1", "cost/sample_passes"):
        assert last[key] == pytest.approx(reference[key], rel=0, abs=0), key


@pytest.mark.slow
def test_removing_a_worker_node_loses_no_trial(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(HERE / "cluster_node_loss.py"), str(tmp_path)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["removed"] and out["trials"] == 4 and out["errors"] == 0
    assert all(e == 4 for e in out["final_epochs"])
    assert all(n == 1 for n in out["epoch1_counts"])  # no trial with a checkpoint started from scratch


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_a_diverging_trial_fails_at_once_with_its_reason_in_ray_and_mlflow(ray_local, tmp_path):
    """A diverging trial (lr 90 on an MLP, no BatchNorm) is not retried although --max-failures
    allows 2; its reason is in the rows and in MLflow, and the method's parent run is FAILED."""
    uri = f"sqlite:///{tmp_path}/nan.db"
    cfg = tiny_config(**{"train.epochs": 3, "model.name": "mlp", "train.weight_decay": 0.9, "train.lr": 90.0})
    starts = []

    class CountStarts(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            starts.append(trial.trial_id)

    rows = sweep(
        cfg,
        "uniform",
        SweepOptions(seeds=[0], storage=str(tmp_path), max_failures=2, name="nan"),
        tracking_uri=uri,
        experiment="nan",
        callbacks=[CountStarts()],
        tolerate_failures=True,  # else TrialsFailed (tests/test_tune_api.py)
    ).rows
    assert list(rows["status"]) == ["ERROR"] and "not finite" in rows["error"][0] and len(starts) == 1
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("nan").experiment_id
    (trial,) = client.search_runs([exp], "tags.run_kind = 'trial'")
    assert trial.info.status == "FAILED" and trial.data.tags["error"].startswith("NonFiniteError: ")
    (parent,) = client.search_runs([exp], "tags.run_kind = 'method'")
    assert parent.info.status == "FAILED" and "1 of 1 trials failed" in parent.data.tags["error"]


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
    args = [
        "train",
        "search_spaces/digits.yaml",
        "--quiet",
        "--no-tracking",
        "--set",
        "train.epochs=1",
        "--set",
        "data.n_train=60",
        "--checkpoint-dir",
        str(ck),
    ]
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


def test_checkpoints_never_unpickle_arbitrary_objects_nor_advise_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Gadget()}, path)
    with pytest.raises(CheckpointError, match="evil.pt' holds Python objects") as err:
        safe_load(path)
    assert "weights_only" not in str(err.value) and "never code" in str(err.value)


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


def _mlflow_processes() -> set:
    """The `mlflow server` processes of this machine (each test's own: it compares before and after)."""
    out = subprocess.run(["pgrep", "-f", "mlflow server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") + b" "
    except OSError:
        return b""


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_the_ui_binds_to_localhost_only_and_any_end_of_it_stops_its_server(tmp_path, sig):
    """SIGTERM and SIGHUP (the terminal closed) are forwarded; on SIGKILL, which ui cannot catch,
    the server still goes (its guard is told to die with its parent), and with it every process of
    its group (the job runner's huey consumers, which the server alone left behind)."""
    from conftest import free_port, group_alive

    port = free_port()
    before = _mlflow_processes()
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adalase_tune",
            "ui",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/u.db",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = [ui.stdout.readline() for _ in range(1)]
        while f"http://127.0.0.1:{port}" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(ui.stdout.readline())  # the URL is printed once the server listens
        assert f"http://127.0.0.1:{port}" in lines[-1], lines
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        # its own server: others may start and stop meanwhile (another xdist worker's tests)
        server = {p for p in _mlflow_processes() - before if f"--port {port} ".encode() in _cmdline(p)}
        assert server
        group = os.getpgid(next(iter(server)))
        signum = getattr(signal, sig)
        ui.send_signal(signum)
        assert ui.wait(timeout=60) == (-signum if signum == signal.SIGKILL else 128 + signum)
        deadline = time.time() + 30  # its guard gives the server 10 s, then kills the group
        while server & _mlflow_processes() or _listening_addresses(port) or group_alive(group):
            assert time.time() < deadline, "the MLflow server or a process of its group outlived the ui command"
            time.sleep(0.5)
    finally:
        if ui.poll() is None:
            ui.kill()


@pytest.mark.slow
def test_the_ui_fails_honestly_when_its_port_is_taken_or_its_server_cannot_start(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/u.db", "--port", str(port)]) == 2
        assert f"--port = {port}: something already listens" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")  # refused before any server starts (tests/test_store_faults.py)
    assert main(["ui", "--tracking-uri", f"sqlite:///{junk}", "--port", "5999"]) == 2
    assert "is not a SQLite database" in capsys.readouterr().err
    import sqlite3

    from conftest import free_port

    future = sqlite3.connect(tmp_path / "future.db")  # a SQLite store of a schema this MLflow does not know
    future.execute("create table alembic_version (version_num varchar(32) not null)")
    future.execute("insert into alembic_version values ('0123456789ab')")
    future.commit()
    future.close()
    proc = subprocess.run(
        [sys.executable, "-m", "adalase_tune", "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'future.db'}",
         "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("adalase-tune: error: the MLflow server did not come up")


def test_local_ray_has_no_dashboard_and_is_guarded_by_token_authentication(ray_local):
    """Ray binds its gRPC servers to every interface and rewrites 127.0.0.1 to the machine's
    address (SECURITY.md): what guards them is token authentication, which must be on."""
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    info = ray._private.worker.global_worker.node.address_info
    assert not info.get("webui_url")  # include_dashboard=False: nothing listens for the dashboard
    assert is_token_auth_enabled()
    assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"


# --- bad input: one line, exit 2, nothing created --------------------------------------------------


def _npz(path: Path, **arrays) -> str:
    full = {
        "x_train": np.random.default_rng(0).random((40, 4)),
        "y_train": np.arange(40) % 2,
        "x_test": np.zeros((6, 4)),
        "y_test": np.arange(6) % 2,
        **arrays,
    }
    np.savez(path, **full)
    return str(path)


def _malformed_cases(tmp: Path) -> list:
    """(argv, words the one line must contain); every case gets its own --storage and
    --tracking-uri (added by the runner) that must still be absent afterwards."""

    def yaml(name, text):
        path = tmp / name
        path.write_text(text)
        return str(path)

    bad_yaml = yaml("syntax.yaml", "train:\n  epochs: [3\n")
    not_npz = tmp / "junk.npz"
    not_npz.write_text("not a zip")
    blocker = tmp / "blocker"
    blocker.write_text("a file")
    folder = tmp / "a_folder"
    folder.mkdir()
    objects = tmp / "objects.npz"
    np.savez(
        objects,
        x_train=np.array([{"a": 1}] * 4, dtype=object),
        y_train=np.zeros(4, int),
        x_test=np.zeros((2, 4)),
        y_test=np.zeros(2, int),
    )
    raw = lambda name, data: (tmp / name).write_bytes(data) and str(tmp / name)  # noqa: E731
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg")
    )  # a few hundred bytes that expand to 10^7 values
    d, m = "search_spaces/digits.yaml", "search_spaces/motifs.yaml"
    t, s, b = ["train", d], ["sweep", d, "--method"], ["benchmark", d]
    npz = lambda path: ["--set", "data.name=npz", "--set", f"data.path={path}"]  # noqa: E731
    return [
        # config files
        (["train", bad_yaml], ["line 3", "YAML syntax error"]),
        (["train", yaml("list.yaml", "- 1\n- 2\n")], ["expected a mapping of sections"]),
        (["train", yaml("typo.yaml", "trian: {epochs: 3}\n")], ["'trian'", "did you mean 'train'"]),
        (["train", yaml("dup.yaml", "train: {epochs: 3}\ntrain: {lr: 0.1}\n")], ["'train' is given twice"]),
        (["train", yaml("dupkey.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")], ["'lr' is given twice"]),
        (["train", str(tmp / "missing.yaml")], ["does not exist"]),
        # config files that are not what they claim: binary, another encoding, alias bombs
        (["train", raw("binary.yaml", bytes(range(256)) * 4)], ["binary.yaml", "binary file, not YAML"]),
        (
            ["train", raw("latin1.yaml", "train: {epochs: 3}  # d\xe9j\xe0\n".encode("latin-1"))],
            ["latin1.yaml", "not UTF-8"],
        ),
        (["train", raw("utf16.yaml", "train: {epochs: 3}\n".encode("utf-16"))], ["utf16.yaml", "UTF-16"]),
        (["train", raw("png.yaml", b"\x89PNG\r\n\x1a\n" + bytes(64))], ["png.yaml", "binary file"]),
        (
            ["train", yaml("laughs.yaml", laughs)],
            ["laughs.yaml", "aliases expand to 12,345,685 values (at most 100,000)"],
        ),
        (["train", yaml("loop.yaml", "train: &t\n  x: *t\n")], ["loop.yaml", "refers to itself"]),
        (["train", str(folder)], ["a_folder", "is a folder"]),
        (
            t + ["--set", "selection.method=probs", "--set", "selection.weights=[0,0,0,0,0]"],
            ["all weights are 0", "none"],
        ),
        (t + ["--set", "train.amp=" + "x" * 20_000], ["train.amp = 'xxx", "... (20,002 characters)"]),
        # values
        (t + ["--set", "train.epochs=three"], ["train.epochs = 'three'", "whole number"]),
        (t + ["--set", "train.epochs=-2"], ["train.epochs = -2", "[1, inf]"]),
        (t + ["--set", "train.lr=0"], ["train.lr = 0.0"]),
        (t + ["--set", "train.lr=.inf"], ["train.lr = inf", "(0.0, 100.0]"]),
        (t + ["--set", "train.weight_decay=.inf"], ["train.weight_decay = inf"]),
        (t + ["--set", "train.lr=.nan"], ["train.lr = nan", "not NaN"]),
        (t + ["--set", "train.seed=-1"], ["train.seed = -1"]),
        (t + ["--set", "train.seed=99999999999999"], ["train.seed = 99999999999999"]),
        (t + ["--set", "train.batch_size=0"], ["train.batch_size = 0"]),
        (t + ["--set", "train.momentum=1.5"], ["train.momentum = 1.5"]),
        (t + ["--set", "train.nesterov=maybe"], ["train.nesterov = 'maybe'", "true or false"]),
        (t + ["--set", "train.device=tpu"], ["train.device = 'tpu'"]),
        (t + ["--set", "train.device=cuda:3"], ["train.device = 'cuda:3'"]),
        (t + ["--set", "data.val_fraction=1.5"], ["data.val_fraction = 1.5"]),
        (t + ["--set", "data.val_fraction=0.0001"], ["data.val_fraction = 0.0001", "holds out no sample"]),
        (t + ["--set", "data.n_train=5000"], ["data.n_train = 5000", "use at most"]),
        (t + ["--set", "data.classes=[1,99]"], ["data.classes", "[99] do not occur"]),
        (t + ["--set", "data.classes=[]"], ["data.classes = []", "at least two"]),
        (t + ["--set", "data.classes=[3]"], ["data.classes = [3]", "at least two"]),
        (t + ["--set", "data.name=cifar11"], ["data.name = 'cifar11'"]),
        (t + ["--set", "model.name=vgg"], ["model.name = 'vgg'", "choose one of"]),
        (t + ["--set", "model.checkpoint=/no/such.pt"], ["model.checkpoint = '/no/such.pt'", "--save-model"]),
        (t + ["--set", "augment.op=rotate"], ["augment.op = 'rotate'"]),
        (t + ["--set", "augment.strength=-1"], ["augment.strength = -1.0"]),
        (t + ["--set", "augment.ops=[mixup,mixpu]"], ["augment.ops", "no op 'mixpu'", "did you mean 'mixup'"]),
        (t + ["--set", "augment.ops=[mixup,mixup]"], ["augment.ops", "listed twice"]),
        (t + ["--set", "augment.ops=[mixup,cutout]", "--set", "augment.strength=0.5"], ["augment.strength = 0.5"]),
        (
            t + ["--set", "augment.ops=[mixup,cutout]", "--set", "augment.strengths=[1]"],
            ["augment.strengths", "one op"],
        ),
        (t + ["--set", "augment.strengths=[0.5,-1]"], ["augment.strengths = -1.0"]),
        (
            t
            + [
                "--set",
                "augment.ops=[mixup,cutout]",
                "--set",
                "selection.method=fixed",
                "--set",
                "selection.site=input",
            ],
            ["selection.site = 'input'", "(site, op) pairs 0..9", "input/mixup"],
        ),
        (
            t
            + [
                "--set",
                "augment.ops=[mixup,cutout]",
                "--set",
                "selection.method=probs",
                "--set",
                "selection.weights=[1,1]",
            ],
            ["has 2 values", "10 (site, op) pairs", "site-major"],
        ),
        (t + ["--set", "selection.method=fixed", "--set", "selection.site=9"], ["selection.site = 9", "sites 0..4"]),
        (t + ["--set", "selection.method=fixed", "--set", "selection.site=layer9"], ["selection.site = 'layer9'"]),
        (t + ["--set", "selection.method=probs", "--set", "selection.weights=[1,-1,1,1,1]"], ["selection.weights"]),
        (t + ["--set", "selection.method=probs", "--set", "selection.weights=[1,2]"], ["has 2 values"]),
        (t + ["--set", "adalase.eta=-0.5"], ["adalase.eta = -0.5"]),
        (t + ["--set", "adalase.interval=0"], ["adalase.interval = 0"]),
        (t + ["--set", "adalase.val_source=test"], ["adalase.val_source = 'test'", "train, holdout"]),
        (t + ["--set", "adalase.preset=turbo"], ["adalase.preset = 'turbo'"]),
        (
            t
            + [
                "--set",
                "selection.method=adalase",
                "--set",
                "adalase.val_source=holdout",
                "--set",
                "data.n_train=10",
                "--set",
                "adalase.holdout_fraction=0.01",
            ],
            ["adalase.holdout_fraction = 0.01"],
        ),
        (t + ["--set", "nosection"], ["expected key=value"]),
        (t + ["--set", "a.b.c=1"], ["keys have the form section.name"]),
        # data files
        (t + npz(_npz(tmp / "mism.npz", y_train=np.zeros(4, int))), ["y_train has shape (4,)", "40 rows"]),
        (t + npz(_npz(tmp / "nans.npz", x_train=np.full((40, 4), np.nan))), ["x_train contains NaN"]),
        (t + npz(_npz(tmp / "neg.npz", y_train=-np.ones(40, int))), ["negative labels"]),
        (t + npz(_npz(tmp / "cplx.npz", x_train=np.ones((40, 4), complex))), ["dtype complex128", "real numbers"]),
        (t + npz(_npz(tmp / "empty.npz", x_train=np.zeros((0, 4)), y_train=np.zeros(0, int))), ["x_train has 0 rows"]),
        (t + npz(_npz(tmp / "unseen.npz", y_test=np.array([0, 1, 0, 1, 7, 7]))), ["labels [7]", "never has"]),
        (t + npz(str(objects)), ["x_train is not a readable numeric array"]),
        (t + npz(str(not_npz)), ["not a readable .npz"]),
        (t + npz(str(tmp / "none.npz")), ["no such file"]),
        (["train", m, "--set", "model.name=cnn"], ["model.name = 'cnn' needs images (C, H, W)", "model.name=mlp"]),
        # output paths: checked before the work
        (t + ["--out", str(folder)], ["--out", "that is a folder"]),
        (t + ["--save-model", str(blocker / "m.pt")], ["--save-model", "is a file, so no folder"]),
        (t + ["--save-model", "/proc/self/nope.pt"], ["--save-model", "not writable"]),
        (t + ["--checkpoint-dir", str(blocker)], ["--checkpoint-dir", "that is a file"]),
        (t + ["--resume"], ["--resume needs --checkpoint-dir"]),
        (t + ["--epochs", "3"], ["unrecognized arguments: --epochs 3"]),
        (t + ["--tracking-uri", "mysql+bogus"], ["--tracking-uri", "unknown scheme '(none)'"]),
        (t + ["--tracking-uri", "gopher://x/y"], ["unknown scheme 'gopher'"]),
        (t + ["--tracking-uri", "http://127.0.0.1:1"], ["no MLflow server answers there"]),
        (["fly", d], ["invalid choice: 'fly'"]),
        # sweeps and benchmarks
        (s + ["bogus"], ["--method = 'bogus'", "choose one of"]),
        (s + ["random", "--num-samples", "0"], ["--num-samples = 0"]),
        (s + ["random", "--num-samples", "x"], ["invalid int value: 'x'"]),
        (s + ["random", "--seeds", "0"], ["--seeds = 0"]),
        (s + ["random", "--storage", str(blocker / "x")], ["--storage", "is a file, so no folder"]),
        (s + ["random", "--storage", "ftp://host/x"], ["--storage", "unknown scheme 'ftp'"]),
        (s + ["random", "--cpus-per-trial", "0"], ["--cpus-per-trial = 0"]),
        (s + ["random", "--cpus-per-trial", "64"], ["--cpus-per-trial = 64.0", "largest node"]),
        (s + ["random", "--gpus-per-trial", "1"], ["--gpus-per-trial = 1.0", "0 GPUs"]),
        (s + ["random", "--max-failures", "-1"], ["--max-failures = -1"]),
        (s + ["random", "--workers-per-trial", "0"], ["--workers-per-trial = 0"]),
        (s + ["random", "--workers-per-trial", "3"], ["--workers-per-trial = 3", "needs 3 CPUs"]),
        (s + ["pbt", "--workers-per-trial", "2"], ["--workers-per-trial = 2", "use --workers-per-trial 1 for pbt"]),
        (s + ["uniform", "--workers-per-trial", "2", "--set", "train.batch_size=1"], ["train.batch_size = 1 over 2"]),
        (["train", d, "--workers", "0"], ["--workers = 0"]),
        (s + ["random", "--name", "../../x"], ["--name = '../../x'", "one path component"]),
        (s + ["random", "--name", "/abs/x"], ["--name = '/abs/x'", "one path component"]),
        (s + ["random", "--name", "it's"], ['--name = "it\'s"', "one path component"]),
        (s + ["random", "--address", "127.0.0.1:1"], ["--address = '127.0.0.1:1'", "nothing answers there"]),
        (s + ["random", "--address", "not-an-address"], ["--address = 'not-an-address'", "expected host:port"]),
        (s + ["pbt", "--num-samples", "0"], ["--num-samples = 0"]),
        (
            ["sweep", yaml("pop.yaml", "sweep: {methods: {pbt: {population: 0}}}\n"), "--method", "pbt"],
            ["sweep.methods.pbt.population = 0"],
        ),
        (
            ["sweep", yaml("grace.yaml", "sweep: {methods: {asha: {grace_period: -2}}}\n"), "--method", "asha"],
            ["sweep.methods.asha.grace_period = -2"],
        ),
        (s + ["asha", "--set", "train.epochs=1"], ["sweep.methods.asha.grace_period = 3, but train.epochs = 1"]),
        (["sweep", yaml("seeds.yaml", "sweep: {seeds: 0}\n"), "--method", "random"], ["sweep.seeds = 0"]),
        (
            ["sweep", yaml("budget.yaml", "sweep: {methods: {random: {num_sample: 3}}}\n"), "--method", "random"],
            ["sweep.methods.random.num_sample"],
        ),
        (b + ["--methods", "adalase,grdi"], ["--methods: 'grdi'", "did you mean 'grid'"]),
        (b + ["--methods", "uniform,uniform"], ["listed twice"]),
        (b + ["--methods", ""], ["--methods is empty"]),
        (b + ["--out", str(blocker)], ["--out", "that is a file"]),
        (b + ["--resume", "--name", "never-started"], ["--resume: no experiment 'never-started-adalase'"]),
        (
            ["report", "--experiment", "nothing-here", "--tracking-uri", f"sqlite:///{tmp}/empty.db"],
            ["no MLflow store there"],
        ),
        (["report", "--experiment", "x", "--out", str(blocker)], ["--out", "that is a file"]),
        (["ui", "--port", "0"], ["--port = 0"]),
    ]


def _with_case_paths(argv: list, case: Path) -> list:
    argv = list(argv)
    if argv and argv[0] in ("train", "sweep", "benchmark") and "--tracking-uri" not in argv:
        argv += ["--tracking-uri", f"sqlite:///{case}/m.db"]
    if argv and argv[0] in ("sweep", "benchmark") and "--storage" not in argv:
        argv += ["--storage", str(case / "ray")]
    return argv


@pytest.mark.slow
def test_malformed_inputs_exit_2_with_one_line_and_create_nothing(tmp_path):
    cases = _malformed_cases(tmp_path)
    runs = []
    for i, (argv, _) in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        runs.append((_with_case_paths(argv, case), str(case)))
    proc = subprocess.run(
        [sys.executable, str(HERE / "malformed_inputs.py"), json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-2000:]
    for (argv, words), r in zip(cases, results):
        lines = r["stderr"].strip().splitlines()
        assert r["code"] == 2, (argv, r)
        assert len(lines) == 1 and lines[0].startswith("adalase-tune: error: "), (argv, r["stderr"])
        assert "Traceback" not in r["stderr"]
        for w in words:
            assert w in lines[0], (argv, w, lines[0])
        assert r["created"] == [], (argv, r["created"])  # no MLflow store, no storage folder, no output
    # Ray started only for the checks that need the cluster (its resources, its address)
    needs_ray = {
        i
        for i, (argv, _) in enumerate(cases)
        if "--cpus-per-trial" in argv and "64" in argv or "--gpus-per-trial" in argv or argv[-1] == "3"
    }
    assert {i for i, r in enumerate(results) if r["ray"]} <= needs_ray
