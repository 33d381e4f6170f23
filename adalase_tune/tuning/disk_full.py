"""A full ``--storage`` during a fit: one line (a ``StorageError``) instead of Ray's tracebacks,
and the partial checkpoints the full disk left removed, so that a resume finds whole ones only.

Example::

    quiet_disk_full(root)
    try:
        grid = tuner.fit()
    except Exception as err:
        if no_space(err):
            raise storage_full(root, name) from None
        raise
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from ..paths import StorageError, storage_error
from .recovery import STATE_BACKUP
from .storage import is_uri, join


def nearly_full(root: str) -> bool:
    """Whether a local ``root`` has less than 1 MiB left (a truncated file read back, EOFError, means that)."""
    if is_uri(root):
        return False
    try:
        stat = os.statvfs(root)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20


_WATCHED: list[str] = []  # the --storage of the fit in progress (quiet_disk_full)

# Tune's records at the end of a fit that a full disk causes without saying so: the trials it could
# not finish, and a trial's result.json that the full disk truncated
AFTERMATH = ("Trials did not complete", "Failed to fetch metrics")


class _DiskFullRecords(logging.Filter):
    """Drops Ray's log records (with their tracebacks) of a write that failed for lack of space,
    and their aftermath while the storage is full: the sweep says it in one line (:func:`storage_full`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(AFTERMATH) and any(nearly_full(root) for root in _WATCHED):
            return False
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        return "No space left on device" not in text and "Errno 28" not in text


def quiet_disk_full(root: str) -> None:
    """Put :class:`_DiskFullRecords` on the handlers of Ray's loggers and the root logger (once),
    for a fit that stores under ``root``."""
    _WATCHED[:] = [root]
    for logger in (logging.getLogger("ray"), logging.getLogger("ray.tune"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, _DiskFullRecords) for f in handler.filters):
                handler.addFilter(_DiskFullRecords())


def no_space(err: Optional[BaseException]) -> bool:
    """Whether ``err`` (or what caused it, or a trial's error text) is a full disk or quota."""
    seen: set = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left on device" in str(err).lower() or "disk quota exceeded" in str(err).lower():
            return True
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return False


def storage_full(root: str, name: str) -> StorageError:
    """The one-line StorageError of a full ``--storage``, once the partial checkpoints that the full
    disk left (never recorded by Tune: it records a checkpoint once it is whole) are removed."""
    if not is_uri(root):
        _drop_partial_checkpoints(Path(root) / name)
    return storage_error(join(root, name), OSError(errno.ENOSPC, "no space left"))


def _drop_partial_checkpoints(folder: Path) -> None:
    from ..checkpoint import CheckpointError, safe_load
    from ..trainable import STATE_FILE

    for ckpt in folder.glob("*/checkpoint_*"):
        try:
            safe_load(ckpt / STATE_FILE)
        except CheckpointError:
            shutil.rmtree(ckpt, ignore_errors=True)
    for tmp in folder.glob(f"{STATE_BACKUP}/.*.tmp"):
        tmp.unlink(missing_ok=True)
