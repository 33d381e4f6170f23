"""The store goes away, and two writers at once: real SQLite files, real tmpfs (a private mount
namespace, as root), real processes holding real OS locks, real CLI sweeps on a real local Ray.

Every case ends in one of two ways: exit 2 with one line before any work, or an honest non-zero
exit (one line, no traceback, runs closed where the store can take it, nothing partial, the
resume command), and nothing of a running sweep is lost or corrupted."""

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_faults import ROOT, in_full_disk, needs_mount

from adalase_tune.config import ConfigError
from adalase_tune.tracking import Tracking, check_tracking_uri

SMALL = ["--set", "train.epochs=2", "--set", "data.n_train=60", "--set", "model.width=4"]
LONG = ["--set", "train.epochs=500", "--set", "data.n_train=300", "--set", "model.width=8"]  # about a minute a trial
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _cli(*args):
    return [sys.executable, "-m", "adalase_tune", *args]


def _said(stderr: str) -> list[str]:
    """What adalase-tune itself said: not Ray's token notice, MLflow's schema notes, the progress lines."""
    noise = ("WARNING authentication_token_setup", "INFO mlflow.store.db.utils")
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("  ") and not any(n in line for n in noise)
    ]


# --- 1. the store is not a store, or can never be written -------------------------------------------


def _text(p):
    p.write_text("not a database\n")


def _png(p):
    p.write_bytes(PNG)


def _short(p):
    p.write_bytes(b"SQLite")  # the start of the header only


def _parent_file(p):
    p.parent.parent.mkdir(parents=True, exist_ok=True)
    p.parent.write_text("a file where the folder should be")


NOT_A_STORE = {  # member -> (make it, what the line says)
    "text file": (_text, "is not a SQLite database"),
    "png": (_png, "is not a SQLite database"),
    "truncated header": (_short, "is not a SQLite database"),
    "parent is a file": (_parent_file, "is a file, not a folder"),
    "a folder": (lambda p: p.mkdir(), "is a folder"),
    "missing folder": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("member", NOT_A_STORE)
def test_a_file_that_is_not_a_store_is_refused_in_one_line(tmp_path, member):
    make, says = NOT_A_STORE[member]
    db = tmp_path / ("deep" if member in ("parent is a file", "missing folder") else "") / "store" / "x.db"
    db = db if member in ("parent is a file", "missing folder") else tmp_path / "x.db"
    make(db)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as err:
        check_tracking_uri(f"sqlite:///{db}")
    text = str(err.value)
    assert says in text and text.startswith("--tracking-uri = ") and "\n" not in text, text
    assert sorted(tmp_path.rglob("*")) == before  # nothing created, nothing left


@pytest.mark.parametrize("member", ["empty file", "new file", "a real store"])
def test_an_empty_new_or_real_store_is_taken(tmp_path, member):
    db = tmp_path / "x.db"
    if member == "empty file":
        db.touch()
    if member == "a real store":
        Tracking(f"sqlite:///{db}", "e")
    assert check_tracking_uri(f"sqlite:///{db}") == f"sqlite:///{db}"
    Tracking(f"sqlite:///{db}", "e")  # and it becomes (or stays) a store
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"


@pytest.mark.parametrize("member", ["/proc", "/sys/kernel"])
def test_a_path_the_store_can_never_write_is_refused_at_once(member):
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        check_tracking_uri(f"sqlite:///{member}/adalase-test.db")
    assert time.monotonic() - start < 5
    assert "SQLite cannot write" in str(err.value) and "\n" not in str(err.value), str(err.value)


@needs_mount
def test_a_read_only_folder_or_file_is_refused_at_once(tmp_path):
    """Read-only for root too: a read-only mount (a chmod does not stop root)."""
    proc = in_full_disk(
        tmp_path,
        """
        import json, subprocess
        from adalase_tune.tracking import Tracking, check_tracking_uri
        from adalase_tune.config import ConfigError
        Tracking(f"sqlite:///{DISK}/old.db", "e")
        subprocess.run(["mount", "--bind", str(DISK), str(DISK)], check=True)  # a read-only mount over it
        subprocess.run(["mount", "-o", "remount,bind,ro", str(DISK)], check=True)
        out = {}
        for name in ("old.db", "new.db"):
            try:
                check_tracking_uri(f"sqlite:///{DISK}/{name}")
                out[name] = "taken"
            except ConfigError as err:
                out[name] = str(err)
        print(json.dumps(out))
        """,
        size_kb=4096,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, text in out.items():
        assert "SQLite cannot write" in text and "read-only file system" in text and name in text, text


@pytest.mark.slow
@pytest.mark.parametrize("member", ["text file", "parent is a file", "/proc"])
def test_the_cli_refuses_a_bad_store_with_exit_2_before_any_work(tmp_path, member):
    """One member of each kind of refusal (a file that is no store, a folder that cannot be, a path
    never writable); every member of NOT_A_STORE is refused in process in the fast tier."""
    if member == "/proc":
        db = Path("/proc/adalase-test.db")
    else:
        db = tmp_path / ("f" if member == "parent is a file" else "") / "x.db"
        db = db if member == "parent is a file" else tmp_path / "x.db"
        NOT_A_STORE[member][0](db)
    start = time.monotonic()
    proc = subprocess.run(
        _cli("sweep", "search_spaces/digits.yaml", *SMALL, "--method", "none", "--storage", str(tmp_path / "ray"),
             "--tracking-uri", f"sqlite:///{db}"),
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = _said(proc.stderr)
    assert line.startswith("adalase-tune: error: --tracking-uri = ") and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "ray").exists()  # no work started


# --- 2a. two processes create one new store at once ---------------------------------------------------

CREATE = {
    "Tracking": "from adalase_tune.tracking import Tracking; Tracking(URI, 'e' + str(I))",
    "the experiment's checks": "from adalase_tune.experiment import _tracking; _tracking(URI, 'e' + str(I), 'x')()",
    "report's reader": (
        "from adalase_tune.tracking import Tracking, _client; _client(URI).search_experiments(); Tracking(URI, 'e')"
    ),
}


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_writers_creating_a_new_store_at_once_all_succeed(tmp_path):
    """Two processes of each entry (six at once) create one new store: each entry races its twin
    and the others, once all have imported and wait (the race is the store's creation, which any
    entry starts); more copies of one entry would only repeat the race that two already run."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    go = tmp_path / "go"
    writers = [entry for entry in CREATE for _ in range(2)]
    procs = []
    for n, entry in enumerate(writers):
        code = f"import os, time\nURI, I = {uri!r}, int(os.environ['I'])\n{CREATE[entry].split(';')[0]}\n"
        code += f"open({str(tmp_path / f'ready{n}')!r}, 'w').close()\n"
        code += f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n{CREATE[entry]}\nprint('ok')"
        procs.append(
            subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "I": str(n)}, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{n}").exists() for n in range(len(writers))):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.05)
    go.touch()  # every one imported and waiting: then all at once
    results = [p.communicate(timeout=120) for p in procs]
    for entry, p, (out, err) in zip(writers, procs, results):
        assert p.returncode == 0 and out.strip() == "ok", (entry, err[-3000:])
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    made = {f"e{n}" for n, entry in enumerate(writers) if entry != "report's reader"}
    assert names >= made | {"e"}


# --- 2b. one writer per experiment ---------------------------------------------------------------------

HOLD = """
import sys, time
from adalase_tune.locks import ExperimentLock
lock = ExperimentLock(sys.argv[1], sys.argv[2].split(",")).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(root: str, names: str):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, root, names], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


LOCKS = {  # member -> (the holder's storage and names, the second writer's storage and names, refused?)
    "same path": ("{t}/ray", "s1", "{t}/ray", "s1", True),
    "the path spelled otherwise": ("{t}/ray", "s1", "{t}/./x/../ray/", "s1", True),
    "file:// URI": ("{t}/ray", "s1", "file://{t}/ray", "s1", True),
    "a benchmark's method": ("{t}/ray", "b-none,b-grid", "{t}/ray", "b-grid", True),
    "s3:// URI, this machine": ("s3://bucket/runs", "s1", "s3://bucket/runs/", "s1", True),
    "another name": ("{t}/ray", "s1", "{t}/ray", "s2", False),
    "another storage": ("{t}/ray", "s1", "{t}/other", "s1", False),
}


@pytest.mark.parametrize("member", LOCKS)
def test_a_second_writer_is_refused_naming_the_holder(tmp_path, monkeypatch, member, tiny):
    from adalase_tune import locks
    from adalase_tune.experiment import prepare
    from adalase_tune.tuning import SweepOptions, storage_root

    monkeypatch.setattr(locks, "LOCK_DIR", tmp_path / ".cache" / "adalase_tune" / "locks")
    monkeypatch.setattr(locks.ExperimentLock, "WAIT_S", 0.3)  # the holder never lets go: no need to wait 2 s
    monkeypatch.setenv("HOME", str(tmp_path))  # the holder's ~/.cache is here too
    held, names, other, name, refused = LOCKS[member]
    held, other = held.format(t=tmp_path), other.format(t=tmp_path)
    root = held if "://" in held else storage_root(held)
    holder = _holder(root, names)
    try:
        second = storage_root(other)
        if not refused:
            with locks.ExperimentLock(second, [name]).acquire():
                return
        with pytest.raises(ConfigError) as err:
            locks.ExperimentLock(second, [name]).acquire()
        text = str(err.value)
        assert f"pid {holder.pid} on " in text and "since " in text and "one experiment takes one writer" in text
        assert f"--name = {name!r}" in text and "\n" not in text
        if "://" not in other:  # and prepare() refuses it before any work, creating nothing
            opts = SweepOptions(storage=other, name=name.split("-")[0], resume=True)
            with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
                prepare(tiny(), ["grid" if "-" in name else "none"], opts, opts.name, lambda m: name)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path, death):
    from adalase_tune.locks import ExperimentLock, lock_holder, lock_path

    root = str(tmp_path / "ray")
    holder = _holder(root, "s1")
    assert lock_holder(lock_path(root, "s1"))["pid"] == holder.pid
    holder.send_signal(death)
    holder.wait()
    assert lock_path(root, "s1").exists()  # its file is left behind ...
    assert lock_holder(lock_path(root, "s1")) is None  # ... but no one holds it
    with ExperimentLock(root, ["s1"]).acquire():
        assert lock_holder(lock_path(root, "s1"))["pid"] == os.getpid()
    assert not lock_path(root, "s1").exists()


def test_a_refused_prepare_leaves_no_lock_and_no_folder(tmp_path, tiny):
    from adalase_tune.experiment import prepare
    from adalase_tune.tuning import SweepOptions

    opts = SweepOptions(storage=str(tmp_path / "new" / "ray"), name="s1", resume=True)
    with pytest.raises(ConfigError, match="no experiment 's1'"):
        prepare(tiny(), ["none"], opts, "s1", lambda m: "s1")
    assert not (tmp_path / "new").exists()


# --- 2c. report during a running benchmark -------------------------------------------------------------


def _benchmark_runs(tmp_path, lock: str, finish: dict) -> str:
    """A benchmark's MLflow runs as a benchmark writes them: methods ``finish`` (method -> its parent's
    end status, None: left RUNNING), each with two finished trials; all of them planned."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking = Tracking(uri, "e")
    planned = ",".join(["uniform", "none", "grid"])
    for i, (method, status) in enumerate(finish.items()):
        parent = tracking.parent_run(method, "b1", "h", {"plain_passes": 120}, {"methods": planned, "lock": lock})
        for seed in (0, 1):
            run = tracking.run_logger(
                f"{method} {seed}",
                {"run_kind": "trial", "mlflow.parentRunId": parent, "sites": ""},
                {"train.seed": seed, "selection.method": method},
            )
            acc = 0.5 + 0.1 * i + 0.01 * seed
            run.finish({"best_val_acc": acc, "test_acc_at_best_val": acc, "final_test_acc": acc, "epochs": 2,
                        "cost/total_device_s": 1.0, "cost/total_sample_passes": 120})  # fmt: skip
        if status:
            tracking.end_run(parent, status)
    return uri


REPORTS = {  # member -> (the lock held by a live writer?, the parents' statuses, PARTIAL?, what it says)
    "running: lock held, a method RUNNING": (True, {"uniform": "FINISHED", "none": None}, True, "still running"),
    "running: between two methods": (True, {"uniform": "FINISHED"}, True, "still running"),
    "killed writer: a method left RUNNING": (False, {"uniform": "FINISHED", "none": None}, True, "did not finish"),
    "interrupted: a method KILLED": (False, {"uniform": "FINISHED", "none": "KILLED"}, True, "did not finish"),
    "complete": (False, {"uniform": "FINISHED", "none": "FINISHED", "grid": "FAILED"}, False, ""),
}


@pytest.mark.parametrize("member", REPORTS)
def test_report_of_an_unfinished_benchmark_is_partial_and_names_no_winner(tmp_path, member):
    from adalase_tune.experiment import rebuild_report
    from adalase_tune.locks import lock_path

    held, finish, partial, says = REPORTS[member]
    root = str(tmp_path / "ray")
    lock = str(lock_path(root, "b1-uniform"))
    holder = _holder(root, "b1-uniform,b1-none,b1-grid") if held else None
    try:
        uri = _benchmark_runs(tmp_path, lock, finish)
        files = rebuild_report("e", "b1", tracking_uri=uri, out=str(tmp_path / "report"))
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    md = Path(files["md"]).read_text()
    if partial:
        (line,) = [x for x in md.splitlines() if x.startswith("- PARTIAL: ")]
        assert says in line, line
        assert held == (f"pid {holder.pid}" in line if holder else False)
        assert "Least compute" not in md and "No method is named the least costly" in md
    else:
        assert "PARTIAL" not in md and "Least compute to come within 0.5 points" in md


# --- slow, end to end: real sweeps on a real local Ray -------------------------------------------------


def _wait_for(path: Path, proc, timeout=180):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None and time.time() - start < timeout, proc.stderr.read()[-3000:]
        time.sleep(0.2)


SECOND = {  # member -> the second writer's extra arguments
    "--resume of the running sweep": ["--resume"],
    "a fresh start of the same name": [],
    "--resume with the storage spelled otherwise": ["--resume", "--storage", "{t}/./ray/"],
}


@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_running_sweep_finishes_clean(tmp_path):
    db = tmp_path / "m.db"
    args = ["sweep", "search_spaces/digits.yaml", *LONG, "--method", "uniform", "--seeds", "2",
            "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}", "--experiment", "two",
            "--name", "s1"]  # fmt: skip
    first = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait_for(tmp_path / "ray" / "s1" / "adalase_tune.json", first)
    for member, extra in SECOND.items():
        assert first.poll() is None, "the sweep ended before every second writer was tried: make LONG longer"
        extra = [e.format(t=tmp_path) for e in extra]
        proc = subprocess.run(_cli(*args, *extra), capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, (member, proc.stderr[-3000:])
        (line,) = _said(proc.stderr)
        assert f"pid {first.pid} on " in line and "one experiment takes one writer" in line, (member, line)
        assert "adalase-tune sweep" in line and "Traceback" not in proc.stderr
    assert first.poll() is None, "the sweep ended before every second writer was tried: make LONG longer"
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("run_kind") == "method"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    assert len(trials) == 2 and all(r.info.status == "FINISHED" and "error" not in r.data.tags for r in trials)
    assert not list((tmp_path / "ray").rglob("error.txt"))
    assert not list((tmp_path / "ray").glob(".*.lock"))  # released at the end


STORE_FAULTS = {  # member -> (shell-free Python that breaks the store at DISK/m.db, the cause said)
    "deleted": ("os.remove(DISK / 'm.db')", "the file was deleted"),
    "replaced": (
        "shutil.copy(DISK / 'm.db', DISK / 'copy'); os.replace(DISK / 'copy', DISK / 'm.db')",
        "the file was replaced",
    ),  # fmt: skip
    "read-only": ("read_only()", "read-only"),
    "disk full": ("fill(DISK / 'filler')", "disk full"),
}


@needs_mount
@pytest.mark.slow
@pytest.mark.parametrize("member", STORE_FAULTS)
def test_the_store_going_away_mid_sweep_stops_it_in_one_line_and_it_resumes(tmp_path, member):
    """The MLflow store on its own tmpfs, broken after the first of 5 trials: one line, exit 1, the
    resume command; once the store is back (a new one when it was deleted) the resume finishes."""
    fault, cause = STORE_FAULTS[member]
    args = ["search_spaces/digits.yaml", "--set", "train.epochs=40", "--set", "data.n_train=300", "--set",
            "model.width=8", "--method", "grid", "--seeds", "1", "--max-concurrent", "1",
            "--storage", str(tmp_path / "ray"), "--experiment", "gone", "--name", "s1"]  # fmt: skip
    proc = in_full_disk(
        tmp_path,
        f"""
        import json, os, re, shlex, shutil, subprocess, sys, time
        def read_only():  # a read-only mount over the store's folder: its open files stay writable
            subprocess.run(["mount", "--bind", str(DISK), str(DISK)], check=True)
            for _ in range(200):  # EBUSY while the sweep has a file open for writing through the new mount
                if subprocess.run(["mount", "-o", "remount,bind,ro", str(DISK)], capture_output=True).returncode == 0:
                    return
                time.sleep(0.02)
            raise SystemExit("the read-only remount stayed busy")
        def fill(path):
            with open(path, "wb") as f:
                try:
                    while True:
                        f.write(b"x" * 65536)
                        f.flush()
                except OSError:
                    pass
        uri = f"sqlite:///{{DISK}}/m.db"
        cmd = [sys.executable, "-m", "adalase_tune", "sweep", *{args!r}, "--tracking-uri", uri]
        p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        err = ""
        while "trial 1/" not in err:
            line = p.stderr.readline()
            if not line:
                break
            err += line
        {fault}
        out, rest = p.communicate(timeout=600)
        err += rest
        if {member!r} == "read-only":
            subprocess.run(["umount", str(DISK)], check=True)  # the read-only mount goes
        (DISK / "filler").unlink(missing_ok=True)
        found = re.search(r"Resume with: adalase-tune (.*)$", err, re.M)
        resumed = subprocess.run([sys.executable, "-m", "adalase_tune", *shlex.split(found.group(1))],
                                 capture_output=True, text=True) if found else None
        shutil.copy(DISK / "m.db", {str(tmp_path / "after.db")!r})
        print(json.dumps({{"code": p.returncode, "err": err, "resumed": resumed and resumed.returncode,
                           "resumed_err": resumed and resumed.stderr[-3000:]}}))
        """,
        size_kb=8192,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 1 and "Traceback" not in out["err"], out["err"][-3000:]
    said = _said(out["err"])
    assert len(said) == 1, "\n".join(said)
    line = said[0]
    assert line.startswith("adalase-tune: error: MLflow store unavailable: ") and "m.db: " in line, line
    assert cause in line and "the sweep stopped" in line and "Resume with: adalase-tune sweep" in line, line
    assert out["resumed"] == 0, out["resumed_err"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'after.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parent = [r for r in runs if r.data.tags.get("run_kind") == "method"]
    assert len(parent) == 1 and "error" not in parent[0].data.tags
    assert not list((tmp_path / "ray").rglob("error.txt"))


@needs_mount
@pytest.mark.slow
@pytest.mark.parametrize("size_kb", [700, 1024])
def test_a_storage_that_fills_up_mid_sweep_says_disk_full_keeps_its_checkpoints_and_resumes(tmp_path, size_kb):
    """--storage on a small tmpfs, a checkpoint every epoch: the disk fills during the second or third
    trial (in the driver's state writes or a trial's checkpoint, by the size). Then more room, and the
    printed resume finishes every trial from the checkpoints kept."""
    db = tmp_path / "m.db"
    args = ["search_spaces/digits.yaml", "--set", "train.epochs=40", "--set", "data.n_train=300", "--set",
            "model.width=8", "--method", "grid", "--seeds", "1", "--max-concurrent", "1", "--checkpoint-s", "0",
            "--tracking-uri", f"sqlite:///{db}", "--experiment", "full", "--name", "s1"]  # fmt: skip
    proc = in_full_disk(
        tmp_path,
        f"""
        import json, re, shlex, subprocess, sys
        from adalase_tune.checkpoint import safe_load
        cmd = [sys.executable, "-m", "adalase_tune", "sweep", *{args!r}, "--storage", str(DISK / "ray")]
        p = subprocess.run(cmd, capture_output=True, text=True)
        partial = []
        for ckpt in (DISK / "ray").glob("s1/*/checkpoint_*"):
            try:
                safe_load(ckpt / "state.pt")
            except Exception:
                partial.append(str(ckpt))
        tmp = [str(t) for t in (DISK / "ray").rglob("*.tmp")]
        subprocess.run(["mount", "-o", "remount,size=16m", str(DISK)], check=True)
        found = re.search(r"Resume with: adalase-tune (.*)$", p.stderr, re.M)
        resumed = subprocess.run([sys.executable, "-m", "adalase_tune", *shlex.split(found.group(1))],
                                 capture_output=True, text=True) if found else None
        print(json.dumps({{"code": p.returncode, "err": p.stderr, "partial": partial, "tmp": tmp,
                           "resumed": resumed and resumed.returncode, "resumed_out": resumed and resumed.stdout,
                           "resumed_err": resumed and resumed.stderr[-3000:]}}))
        """,
        size_kb=size_kb,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 1 and "Traceback" not in out["err"], out["err"][-3000:]
    said = _said(out["err"])
    assert len(said) == 1, "\n".join(said)
    (line,) = said
    assert "cannot write " in line and "/ray/s1': disk full" in line and "Resume with: adalase-tune sweep" in line
    assert out["partial"] == [] and out["tmp"] == []  # no partial checkpoint, no temporary file left
    assert out["resumed"] == 0, out["resumed_err"]
    assert re.search(r"grid: (\d+)/\1 trials finished", out["resumed_out"]), out["resumed_out"]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert all(r.info.status != "RUNNING" for r in runs)
    (parent,) = [r for r in runs if r.data.tags.get("run_kind") == "method"]
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert all(r.info.status == "FINISHED" and "error" not in r.data.tags for r in trials)


# --- 3. a signal in the first seconds -----------------------------------------------------------------

EARLY = {  # member -> (command, signal, seconds after its checks passed: Ray is starting)
    "sweep, SIGINT as Ray starts": ("sweep", signal.SIGINT, 0.0),
    "sweep, SIGTERM as Ray starts": ("sweep", signal.SIGTERM, 0.0),
    "sweep, SIGHUP 1 s into Ray's start": ("sweep", signal.SIGHUP, 1.0),
    "benchmark, SIGINT as Ray starts": ("benchmark", signal.SIGINT, 0.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("member", EARLY)
def test_a_signal_in_the_first_seconds_gives_a_command_that_works(tmp_path, member):
    command, sig, after = EARLY[member]
    what = ["--method", "none"] if command == "sweep" else ["--methods", "none,uniform"]
    args = [command, "search_spaces/digits.yaml", *SMALL, *what, "--storage", str(tmp_path / "ray"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--experiment", "early", "--name", "x"]  # fmt: skip
    if command == "benchmark":
        args += ["--out", str(tmp_path / "out")]
    p = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait_for(tmp_path / "ray" / (".x.lock" if command == "sweep" else ".x-none.lock"), p)  # its checks passed
    time.sleep(after)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig, err[-3000:]
    (line,) = _said(err)
    found = re.search(r"(?:Resume with|start it again with): adalase-tune (.*)$", line)
    assert found and "Traceback" not in err, line
    if "start it again" in line:
        assert "--resume" not in found.group(1) and "before anything was saved" in line
    again = subprocess.run(_cli(*shlex.split(found.group(1))), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, (line, again.stderr[-3000:])


def test_sqlite_is_what_the_header_check_expects(tmp_path):
    """The header the store check reads is SQLite's own (a guard against a wrong constant)."""
    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("create table t (x)")
    con.commit()
    con.close()
    assert (tmp_path / "x.db").read_bytes()[:16] == b"SQLite format 3\x00"
