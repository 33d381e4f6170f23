"""The command line: a working train run, and bad input that exits 2 with one readable line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from adalase_tune.cli import main

DIGITS = "search_spaces/digits.yaml"
FAST = ["--set", "train.epochs=1", "--set", "data.n_train=60", "--set", "model.width=4", "--quiet"]


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr()


def test_train_writes_the_summary_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    code, io = _run(capsys, "train", DIGITS, *FAST, "--set", "selection.method=adalase", "--out", str(out))
    assert code == 0
    s = json.loads(out.read_text())
    for key in (
        "config",
        "sites",
        "best_val_acc",
        "test_acc_at_best_val",
        "final_test_acc",
        "epochs",
        "q_final",
        "q_history",
        "cost",
    ):
        assert key in s
    assert set(s["cost"]) >= {"train_s", "eval_s", "adalase_s", "sample_passes", "device"}
    assert "best val/acc" in io.out


def test_transfer_source_then_target(tmp_path, capsys):
    src = tmp_path / "source.pt"
    code, _ = _run(capsys, "train", "search_spaces/digits_source.yaml", *FAST, "--save-model", str(src))
    assert code == 0 and src.is_file()
    out = tmp_path / "t.json"
    code, io = _run(
        capsys,
        "train",
        "search_spaces/digits_transfer.yaml",
        "--set",
        f"model.checkpoint={src}",
        "--set",
        "train.epochs=1",
        "--set",
        "model.width=4",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0, io.err
    s = json.loads(out.read_text())
    assert s["config"]["data"]["classes"] == [5, 6, 7, 8, 9] and s["config"]["data"]["n_train"] == 50


def test_checkpoint_dir_and_resume(tmp_path, capsys):
    ck = tmp_path / "ck"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    args = ["train", DIGITS, *FAST, "--set", "train.epochs=2", "--checkpoint-dir", str(ck)]
    assert _run(capsys, *args, "--out", str(a))[0] == 0
    assert (ck / "last.pt").is_file()
    code, io = _run(capsys, *args, "--resume", "--out", str(b))
    assert code == 0 and "resuming" in io.err
    assert json.loads(b.read_text())["history"] == json.loads(a.read_text())["history"]


@pytest.fixture
def bad_npz(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 8)), y_train=np.zeros(4))
    return str(path)


BAD = [
    (["--set", "model.name=resnet19"], "model.name = 'resnet19'"),
    (["--set", "augment.op=mixpu"], "augment.op = 'mixpu'"),
    (["--set", "selection.method=adalace"], "selection.method = 'adalace'"),
    (["--set", "data.name=cifar11"], "data.name = 'cifar11'"),
    (["--set", "selection.method=fixed", "--set", "selection.site=7"], "selection.site = 7, but cnn has sites 0..4"),
    (["--set", "selection.method=probs", "--set", "selection.weights=[1,2]"], "selection.weights has 2 values"),
    (["--set", "adalase.eta=-1"], "adalase.eta = -1.0"),
    (["--set", "adalase.min_rate_sum=1"], "adalase.min_rate_sum = 1.0"),
    (["--set", "data.n_train=100000"], "data.n_train = 100000, but the training split of digits has"),
    (["--set", "train.epoch=3"], "unknown config key 'train.epoch' (did you mean 'epochs'?)"),
    (["--set", "train.device=cuda:3"], "train.device = 'cuda:3'"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_input_exits_2_with_one_line(extra, message, capsys):
    code, io = _run(capsys, "train", DIGITS, "--quiet", *extra)
    assert code == 2
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adalase-tune: error: ") and message in lines[0], io.err


def test_npz_with_missing_keys(bad_npz, capsys):
    code, io = _run(capsys, "train", DIGITS, "--quiet", "--set", "data.name=npz", "--set", f"data.path={bad_npz}")
    assert code == 2 and "missing keys ['x_test', 'y_test']" in io.err


def test_python_dash_m_works_and_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "adalase_tune", "train", DIGITS, "--set", "train.epochs=oops"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "adalase-tune: error: train.epochs = 'oops': expected a whole number"
    proc = subprocess.run([sys.executable, "-m", "adalase_tune", "train"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_the_command_line_loads_neither_torch_nor_ray_before_its_signal_handlers():
    """A signal in a command's first instants must find adalase-tune's handlers, not an import of
    torch half done (a KeyboardInterrupt traceback): cli.py's imports stay light."""
    import subprocess
    import sys

    heavy = "('torch', 'ray', 'numpy', 'mlflow')"
    code = f"import sys, adalase_tune.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
