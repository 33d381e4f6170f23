"""Checkpoint files: written atomically, read with ``weights_only=True``.

A kill during a save never leaves a half-written file under the final name; a corrupted or
truncated file gives an error that names it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .config import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read; the message names the file."""


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_load(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: no pickle of arbitrary objects."""
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
