"""Faults of the disk: a real full file system (a tiny tmpfs in a private mount namespace, as
root), never a patched write. Every output is written atomically: the previous file stays whole,
nothing partial is left, and the error is one line naming the path and "disk full"."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CAN_MOUNT = os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="needs root and unshare -m for a private tmpfs")


def in_full_disk(tmp_path: Path, script: str, size_kb: int = 64, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``script`` (Python; ``DISK`` is the mounted folder) with a ``size_kb`` tmpfs at ``DISK``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    body = f"from pathlib import Path\nDISK = Path({str(disk)!r})\n" + textwrap.dedent(script)
    (tmp_path / "script.py").write_text(body)
    shell = f"mount -t tmpfs -o size={size_kb}k tmpfs {disk} && cd {ROOT} && {sys.executable} {tmp_path / 'script.py'}"
    return subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=timeout)


@needs_mount
def test_writes_on_a_full_disk_leave_the_previous_file_whole_and_say_disk_full(tmp_path):
    proc = in_full_disk(
        tmp_path,
        """
        import json, torch
        from adalase_tune.checkpoint import StorageError, atomic_save, atomic_write, safe_load
        atomic_save({"epoch": 1}, DISK / "last.pt")
        atomic_write(DISK / "run.json", json.dumps({"epoch": 1}))
        errors = []
        for write in (lambda: atomic_save({"w": torch.zeros(50_000)}, DISK / "last.pt"),
                      lambda: atomic_write(DISK / "run.json", "x" * 200_000),
                      lambda: atomic_write(DISK / "sub" / "report.md", "y" * 200_000)):
            try:
                write()
            except StorageError as err:
                errors.append(str(err))
        print(json.dumps({"errors": errors, "files": sorted(str(p.relative_to(DISK)) for p in DISK.rglob("*")),
                          "ckpt": safe_load(DISK / "last.pt"), "json": json.loads((DISK / "run.json").read_text())}))
        """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["errors"]) == 3
    for err, name in zip(out["errors"], ["last.pt", "run.json", "report.md"]):
        assert err.startswith("cannot write ") and name in err
        assert err.endswith("disk full (no space left on the device)")
        assert "\n" not in err
    assert out["files"] == ["last.pt", "run.json", "sub"]  # no temporary file left, nothing partial
    assert out["ckpt"] == {"epoch": 1} and out["json"] == {"epoch": 1}  # the previous versions, whole


@needs_mount
@pytest.mark.slow
def test_train_on_a_disk_that_fills_up_says_so_in_one_line_keeps_its_checkpoint_and_resumes(tmp_path):
    """``--checkpoint-dir`` on an 80 KiB disk: the first checkpoint (54 KB) fits, the second cannot
    (its temporary file and the first need 108 KB)."""
    db = tmp_path / "m.db"  # the store is elsewhere: only the checkpoint folder is full
    sets = ["--set", "train.epochs=3", "--set", "data.n_train=100", "--set", "model.width=4"]
    args = ["search_spaces/digits.yaml", *sets, "--tracking-uri", f"sqlite:///{db}", "--experiment", "full", "--quiet"]
    proc = in_full_disk(
        tmp_path,
        f"""
        import json, shutil, subprocess, sys
        run = subprocess.run([sys.executable, "-m", "adalase_tune", "train", *{args!r},
                              "--checkpoint-dir", str(DISK / "ck")], capture_output=True, text=True)
        shutil.copytree(DISK / "ck", {str(tmp_path / "ck")!r})
        print(json.dumps({{"code": run.returncode, "err": run.stderr}}))
        """,
        size_kb=80,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = out["err"].strip().splitlines()
    assert out["code"] == 1 and len(lines) == 1 and "Traceback" not in out["err"], out["err"][-2000:]
    assert "cannot write" in lines[0] and "last.pt': disk full" in lines[0] and "MLflow run is FAILED" in lines[0]
    assert lines[0].endswith("--resume") and "--checkpoint-dir" in lines[0]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["last.pt"]  # no temporary file left

    from mlflow.tracking import MlflowClient

    from adalase_tune.checkpoint import safe_load

    assert safe_load(tmp_path / "ck" / "last.pt")["epoch"] == 1  # the last checkpoint that fitted, whole
    resumed = subprocess.run(
        [sys.executable, "-m", "adalase_tune", "train", *args, "--checkpoint-dir", str(tmp_path / "ck"), "--resume"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc")) == [1, 2, 3]


@needs_mount
@pytest.mark.slow
def test_report_reads_a_store_in_a_read_only_folder(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    bench = [sys.executable, "-m", "adalase_tune", "benchmark", "search_spaces/digits.yaml", "--methods", "uniform",
             "--seeds", "1", "--set", "train.epochs=1", "--set", "data.n_train=60", "--set", "model.width=4",
             "--tracking-uri", f"sqlite:///{store}/m.db", "--experiment", "e", "--storage", str(tmp_path / "ray"),
             "--out", str(tmp_path / "out")]  # fmt: skip
    assert subprocess.run(bench, capture_output=True, text=True, timeout=600, cwd=ROOT).returncode == 0
    ro, out = tmp_path / "ro", tmp_path / "report"
    ro.mkdir()
    report = f"{sys.executable} -m adalase_tune report --experiment e --tracking-uri sqlite:///{ro}/m.db --out {out}"
    shell = f"mount --bind {store} {ro} && mount -o remount,ro,bind {ro} && cd {ROOT} && {report}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "**uniform**" in (out / "report.md").read_text()  # read through a read-only mount: nothing written there
