"""Checks of output paths that create nothing: a bad path fails before any work, and a failed
check leaves no folder behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .config import ConfigError


def check_dir(path: str, flag: str, given: str = "") -> Path:
    """``path`` is, or can be created as, a writable folder. Returns it resolved; creates nothing.
    ``given``: the value the user gave, when ``path`` is derived from it (a file's folder)."""
    given = given or path
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir() and given == path:
        raise ConfigError(f"{flag} = {given!r}: that is a file; give a folder")
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"{flag} = {given!r}: {ancestor} is a file, so no folder can be made there; choose another path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} = {given!r}: {ancestor} is not writable; choose a folder you can write to")
    return target


def check_file(path: str, flag: str) -> Path:
    """``path`` can be written as a file (not a folder; its folder writable or creatable). Creates nothing."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ConfigError(f"{flag} = {path!r}: that is a folder; give a file name")
    check_dir(str(target.parent), flag, given=path)
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag} = {path!r}: the file exists and is not writable; choose another path")
    return target


class StorageError(OSError):
    """A file could not be written (disk full, read-only, no permission); the message is one
    line naming the path and the cause. Nothing partial is left under the final name."""

    def __str__(self) -> str:
        return str(self.strerror)


_CAUSES = {
    errno.ENOSPC: "disk full (no space left on the device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_error(path: str | Path, err: OSError) -> StorageError:
    """The one-line :class:`StorageError` for ``err`` while writing ``path``."""
    cause = _CAUSES.get(err.errno or 0, err.strerror or type(err).__name__)
    return StorageError(err.errno, f"cannot write {str(path)!r}: {cause}")
