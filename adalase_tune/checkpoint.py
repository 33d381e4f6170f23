"""Checkpoint and output files: written atomically, read with ``weights_only=True``.

A kill or a full disk during a save never leaves a half-written file under the final name (the
previous version stays whole); a failed write is one :class:`StorageError` line naming the path
and the cause; a corrupted or truncated file gives an error that names it.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from .config import ConfigError
from .interrupts import signals_held
from .paths import _CAUSES, StorageError, storage_error  # noqa: F401  (re-exported: the writers raise them)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.serialization import MAP_LOCATION


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read; the message names the file."""


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, then rename into place; on any
    failure the temporary file goes and ``path`` keeps its previous content. A stop signal that
    arrives meanwhile is acted on once the file is in place."""
    with signals_held():
        _write_file(path, write)


def _write_file(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise storage_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, StorageError):
            raise storage_error(path, err) from None
        if isinstance(err, RuntimeError) and "enforce fail" in str(err):  # torch's C++ writer failed
            raise storage_error(path, OSError(errno.ENOSPC if _full(path) else errno.EIO, "the write failed")) from None
        raise


def _full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20  # under 1 MiB left


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename into place."""
    _write_atomically(Path(path), lambda f: torch.save(obj, f))


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    blob = data.encode() if isinstance(data, str) else data
    _write_atomically(Path(path), lambda f: f.write(blob))


def figure_bytes(fig: Figure, **savefig: Any) -> bytes:
    """A matplotlib figure rendered to PNG bytes (for :func:`atomic_write`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def safe_load(path: str | Path, map_location: MAP_LOCATION = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: no pickle of arbitrary objects (tensors and plain
    data, typed ``Any`` as ``torch.load`` is)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: that would run the file's code
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds Python objects besides tensors and plain data, so it "
            "is not loaded (adalase-tune reads only tensors and plain data, never code); use a "
            "checkpoint written by adalase-tune, or delete this one"
        ) from None
    except Exception:  # torch raises RuntimeError, EOFError... by the kind of damage
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted or truncated; delete it to start that run afresh"
        ) from None
