"""One writer per experiment: an OS lock (``flock``) on a file beside the experiment's storage folder.

A sweep or a benchmark holds the lock of each of its Tuners' folders from its checks to its end;
a second writer (another start, or a ``--resume`` of a run still going) is refused in one line
naming the holder. The OS releases the lock when its holder dies, even of SIGKILL, so a stale lock
file never blocks. For storage given as a URI (``s3://...``) the lock lives on this machine
(``~/.cache/adalase_tune/locks``) and guards only its writers. Ray-free: ``report`` reads it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from .config import ConfigError

LOCK_DIR = Path.home() / ".cache" / "adalase_tune" / "locks"  # the locks of experiments on URI storage


def lock_path(root: str, name: str) -> Path:
    """The lock file of experiment ``name``: ``<root>/.<name>.lock`` beside its folder; for a URI
    (``s3://...``) a file in ``~/.cache/adalase_tune/locks`` (this machine's writers only)."""
    if "://" in root and not root.startswith("file://"):
        import hashlib

        key = f"{root.partition('?')[0].rstrip('/')}/{name}"
        return LOCK_DIR / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    return Path(root.removeprefix("file://")) / f".{name}.lock"


def lock_holder(path: str | Path) -> Optional[dict]:
    """Who holds the lock file ``path`` (pid, host, command, since), or None when no live process
    does: an OS lock (``flock``) goes with its holder, however it died."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_info(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_info(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict) -> str:
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')}: "
        f"{info.get('command', '?')}"
    )


class ExperimentLock:
    """One writer per experiment: an exclusive ``flock`` on each job's lock file (:func:`lock_path`),
    held for the whole sweep or benchmark. A second writer is refused with a :class:`ConfigError`
    naming the holder; a holder that died (even of SIGKILL) holds nothing, since the OS releases its
    lock. The files go when the lock is released (and a storage root made for them, when empty)."""

    WAIT_S = 2.0  # a reader (report) may hold the lock shared for an instant

    def __init__(self, root: str, names: Sequence[str]):
        self.root, self.names = root, list(names)
        self.held: list = []  # (path, fd)
        self.made: list[Path] = []

    def acquire(self) -> ExperimentLock:
        import fcntl
        import shlex
        import socket

        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": shlex.join(["adalase-tune", *sys.argv[1:]] if _is_cli() else sys.argv)[:500],
        }
        try:
            for name in self.names:
                path = lock_path(self.root, name)
                self._make(path.parent)
                deadline = time.monotonic() + self.WAIT_S
                while True:
                    try:
                        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    except OSError as err:
                        raise ConfigError(
                            f"--storage = {self.root!r}: cannot create the lock file {path} ({err.strerror}); "
                            "choose storage you can write"
                        ) from None
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        holder = _holder_info(fd)
                        os.close(fd)
                        if time.monotonic() < deadline:
                            time.sleep(0.1)
                            continue
                        raise ConfigError(
                            f"--name = {name!r}: another adalase-tune is writing this experiment in {self.root} "
                            f"({describe_holder(holder)}); one experiment takes one writer: wait for it to end "
                            "(or stop it), then run this again"
                        ) from None
                    if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                        break
                    os.close(fd)  # the holder before us removed the file as we opened it: take the new one
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
                self.held.append((path, fd))
        except BaseException:
            self.release()
            raise
        return self

    def _make(self, folder: Path) -> None:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self.made += missing

    def release(self) -> None:
        for path, fd in reversed(self.held):
            with contextlib.suppress(OSError):
                path.unlink()  # while still holding it: a waiting writer retries on the new file
            os.close(fd)
        self.held = []
        for folder in self.made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.made = []

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _is_cli() -> bool:
    return Path(sys.argv[0]).name in ("adalase-tune", "__main__.py")
