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
