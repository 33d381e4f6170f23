"""Where a sweep keeps its Tuners: the storage root (a local path or a URI), the experiment names
under it, and the meta file each Tuner is registered with (what ``--resume`` compares against).

Example::

    root = storage_root("runs/ray")  # absolute, checked writable, not created yet
    make_storage(root)
    save_meta(root, "motifs-grid", {"config": cfg.to_dict(), "method": "grid", "sites": sites})
    assert experiment_exists(root, "motifs-grid")
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "memory")
META_FILE = "adalase_tune.json"


def check_name(name: str, flag: str = "--name") -> str:
    """A name that is one safe path component and one safe MLflow filter literal."""
    if not NAME.match(name):
        raise ConfigError(
            f"{flag} = {name!r}: use letters, digits, '.', '_' and '-' only (one path component, "
            "at most 100 characters, not starting with '.' or '-')"
        )
    return name


def join(root: str, name: str) -> str:
    """``root/name`` for a path or a URI, keeping a URI's query (``?endpoint_override=...``) at the end."""
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def storage_root(storage: str) -> str:
    """An absolute local path (checked writable, not created yet) or a URI of a scheme Ray reads."""
    if is_uri(storage):
        scheme = storage.split("://", 1)[0]
        if scheme not in URI_SCHEMES:
            raise ConfigError(
                f"--storage = {storage!r}: unknown scheme {scheme!r}; use a path or one of "
                + ", ".join(f"{s}://" for s in URI_SCHEMES)
            )
        return storage
    from ..paths import check_dir

    return str(check_dir(storage.removeprefix("file://"), "--storage"))


def make_storage(root: str) -> None:
    """Create a local storage root (once every check has passed)."""
    if not is_uri(root):
        Path(root).mkdir(parents=True, exist_ok=True)


def experiment_exists(root: str, name: str) -> bool:
    """Whether ``root/name`` holds an experiment: registered by adalase-tune, or Tune state."""
    if not is_uri(root):
        folder = Path(root) / name
        return folder.is_dir() and any(folder.iterdir())
    from ray import tune

    return load_meta(root, name) is not None or tune.Tuner.can_restore(join(root, name))


def _fs(root: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of a storage root, local or URI."""
    import pyarrow.fs

    if is_uri(root):
        return pyarrow.fs.FileSystem.from_uri(root)
    return pyarrow.fs.LocalFileSystem(), root


def save_meta(root: str, name: str, meta: dict) -> None:
    """Write what a Tuner was started with, so that ``--resume`` can check it is the same."""
    fs, path = _fs(root)
    folder = f"{path.rstrip('/')}/{name}"
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/{META_FILE}") as f:
        f.write(json.dumps(meta, sort_keys=True, default=str).encode())


def load_meta(root: str, name: str) -> Optional[dict]:
    """What the Tuner ``root/name`` was started with (:func:`save_meta`), or None."""
    import pyarrow.fs

    fs, path = _fs(root)
    target = f"{path.rstrip('/')}/{name}/{META_FILE}"
    if fs.get_file_info(target).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        meta: dict = json.loads(f.read().decode())
        return meta
