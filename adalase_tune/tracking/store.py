"""The MLflow store itself: its URI checked before any run is created (scheme, a server that
answers, a SQLite file SQLite can write), the client (a new SQLite store created under a file lock),
and every call retried while SQLite is locked and turned into one :class:`StoreUnavailable` line when
the store went away (deleted, replaced, read-only, full, its server gone).

Example::

    uri = check_tracking_uri(default_uri())  # sqlite:///<absolute path>/mlflow.db
    client = _client(uri)
    runs = _retry(client.search_runs, [experiment_id], filter_string=f"tags.benchmark = {literal(name)}")
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError
from ..paths import StorageError

DEFAULT_URI = "sqlite:///mlflow.db"  # in the working folder, unless MLFLOW_TRACKING_URI is set
SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
CONNECT_TIMEOUT_S = 10.0
_RETRIES = 5


def default_uri(uri: str = "default") -> str:
    """``"default"``: MLflow's own ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlflow.db`` in
    the working folder; any other URI is returned as it is."""
    import os

    return (os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI) if uri == "default" else uri


class StoreUnavailable(StorageError):
    """The MLflow store went away during the work: its SQLite file deleted, replaced, made
    read-only or full, or its server gone. One line: ``MLflow store unavailable: <path>: <cause>``."""


SQLITE_MAGIC = b"SQLite format 3\x00"
# what SQLite (through SQLAlchemy and MLflow) says when the store is gone, and what that means
_GONE = {
    "readonly database": (errno.EROFS, "read-only (attempt to write a readonly database)"),
    "read-only file system": (errno.EROFS, "read-only file system"),
    "database or disk is full": (errno.ENOSPC, "disk full"),
    "no space left": (errno.ENOSPC, "disk full"),
    "unable to open database": (errno.ENOENT, "cannot open the database file"),
    "no such table": (errno.ENOENT, "its tables are gone (the file was deleted or replaced)"),
    "disk i/o error": (errno.EIO, "disk I/O error"),
    "file is not a database": (errno.EINVAL, "the file is no longer a SQLite database"),
    "malformed": (errno.EINVAL, "the database file is corrupted (malformed)"),
    "max retries exceeded": (errno.ECONNREFUSED, "the server does not answer"),
    "connection refused": (errno.ECONNREFUSED, "the server does not answer"),
}
_LOST: dict = {}  # store -> its StoreUnavailable: a store found gone is not asked again (no retries, no waits)
_STORES: dict = {}  # SQLite path -> (device, inode) when this process opened it
_CREATED: set = set()  # SQLite stores whose schema this process made sure of


def sqlite_path(uri: str) -> Optional[Path]:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _client(uri: str, create: bool = True) -> Any:
    """An MlflowClient of ``uri``. A SQLite store is created (its schema) under a file lock beside it
    (``<file>.lock``): two processes creating one new store at once would both create its tables.
    ``create=False``: a store that exists and is only read (in a folder that may be read-only)."""
    from mlflow.tracking import MlflowClient

    _quiet_store_errors()
    path = sqlite_path(uri)
    if path is None or uri in _CREATED or not create:
        client = MlflowClient(tracking_uri=uri)
    else:
        from filelock import FileLock

        with FileLock(f"{path}.lock", timeout=300):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # the schema exists (and is current) once this returns
        _CREATED.add(uri)
        with contextlib.suppress(OSError):
            st = path.stat()
            _STORES[str(path)] = (st.st_dev, st.st_ino)
    client._adalase_store = uri  # type: ignore[attr-defined]  # for _retry's checks
    return client


def _quiet_store_errors() -> None:
    """MLflow logs every SQLAlchemy error with its traceback (some 100 lines) before it raises it; the
    error itself comes back here, as one line."""
    import logging

    log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _NoStoreTracebacks) for f in log.filters):
        log.addFilter(_NoStoreTracebacks())


class _NoStoreTracebacks:
    def filter(self, record: logging.LogRecord) -> bool:
        # ERROR and above: raised, and said in one line by the caller; INFO ("Creating initial MLflow
        # database tables..."): a new store is not news, and a command's stderr stays its own lines
        return logging.WARNING <= record.levelno < logging.ERROR


def _unavailable(uri: str, err: BaseException) -> Optional[StoreUnavailable]:
    """The :class:`StoreUnavailable` that ``err`` (from a call to the store ``uri``) means, or None."""
    text = " ".join(str(err).split()).lower()
    for needle, (code, cause) in _GONE.items():
        if needle in text:
            path = sqlite_path(uri)
            if path is not None and code in (errno.ENOENT, errno.EIO, errno.EROFS):  # what SQLite could not say
                with contextlib.suppress(OSError):
                    stat = os.statvfs(path.parent)
                    if stat.f_flag & os.ST_RDONLY:
                        code, cause = errno.EROFS, "read-only file system"
                    elif stat.f_bavail * stat.f_frsize < 1 << 16:
                        code, cause = errno.ENOSPC, "disk full"
            return StoreUnavailable(code, f"MLflow store unavailable: {path or uri}: {cause}")
    return None


def _check_store(uri: str) -> None:
    """A SQLite store still there as the file this process opened: SQLite would go on writing into a
    deleted file (its open connections), and every later write would be lost."""
    if uri in _LOST:
        raise _LOST[uri]
    path = sqlite_path(uri)
    if path is None or str(path) not in _STORES:
        return
    try:
        st = path.stat()
        cause = "the file was replaced" if (st.st_dev, st.st_ino) != _STORES[str(path)] else ""
    except FileNotFoundError:
        cause = "the file was deleted"
    except OSError as err:
        cause = err.strerror or type(err).__name__
    if cause:
        _LOST[uri] = StoreUnavailable(errno.ENOENT, f"MLflow store unavailable: {path}: {cause}")
        raise _LOST[uri]


def _retry(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """SQLite stores lock briefly under concurrent writers; retry a few times. A store that went
    away raises :class:`StoreUnavailable` (one line), at once and for every later call."""
    uri = getattr(getattr(fn, "__self__", None), "_adalase_store", None)
    if uri is not None:
        _check_store(uri)
    for attempt in range(_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # mlflow wraps sqlite's OperationalError in MlflowException
            if "locked" in str(err).lower() and attempt < _RETRIES - 1:
                time.sleep(0.2 * 2**attempt)
                continue
            gone = _unavailable(uri, err) if uri is not None else None
            if gone is None:
                raise
            if uri is not None:
                with contextlib.suppress(StoreUnavailable):
                    _check_store(uri)  # a deleted file says so, rather than "no such table"
            _LOST[uri] = _LOST.get(uri, gone)
            raise _LOST[uri] from None


def literal(value: str) -> str:
    """``value`` as a string literal of an MLflow filter: quoted, never able to end the literal."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{value!r}: a name may not hold both ' and \"; choose another")


def uri_flag(uri: str) -> str:
    """Where a tracking URI came from, for messages: ``--tracking-uri``, or MLflow's environment
    variable when that is what the default resolved to."""
    import os

    return "$MLFLOW_TRACKING_URI" if uri and uri == os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"


def check_tracking_uri(uri: str, write: bool = True) -> str:
    """Resolve a relative ``sqlite:///file`` to an absolute path and check the scheme, and that a
    server answers (within ``CONNECT_TIMEOUT_S``): before any run is created. ``write=False``: a
    store that is only read (``report``) may sit in a read-only folder."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{uri_flag(uri)} = {uri!r}: unknown scheme {scheme or '(none)'!r}; use sqlite:///path.db, "
            "http://host:port or another MLflow URI (" + ", ".join(SCHEMES) + ")"
        )
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else Path.cwd() / path
        _check_sqlite(uri, path, write)
        return f"sqlite:///{path}"
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            with socket.create_connection(
                (parts.hostname, parts.port or (443 if scheme == "https" else 80)), timeout=CONNECT_TIMEOUT_S
            ):
                pass
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{uri_flag(uri)} = {uri!r}: no MLflow server answers there ({err}); start it "
                f"(mlflow server --host 127.0.0.1 --port ...) or fix the address"
            ) from None
    return uri


def _check_sqlite(uri: str, path: Path, write: bool = True) -> None:
    """A SQLite store this process can use: a SQLite file (or an empty or new one) in a folder
    where SQLite can write its journal, refused at once otherwise (SQLite retries for minutes)."""
    bad = lambda why, fix: ConfigError(f"{uri_flag(uri)} = {uri!r}: {why}; {fix}")  # noqa: E731
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise bad(f"{above} is a file, not a folder", "name a .db file in a folder")
    if not path.parent.is_dir():
        raise bad(f"folder {path.parent} does not exist", "create it first")
    if path.is_dir():
        raise bad(f"{path} is a folder", "name a .db file")
    if path.exists() and not path.is_file():
        raise bad(f"{path} is not a regular file", "name a .db file")
    try:
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
            if head and head != SQLITE_MAGIC:
                why = f"{path} is not a SQLite database (it starts {head[:8]!r})"
                raise bad(why, "name an MLflow .db file or a new one")
            if not write:
                return
            with open(path, "r+b"):  # SQLite writes it in place
                pass
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"  # and its journal beside it
        probe.touch()
        probe.unlink()
    except OSError as err:
        from ..paths import _CAUSES

        cause = _CAUSES.get(err.errno or 0, err.strerror or type(err).__name__)
        raise bad(f"SQLite cannot write {err.filename or path} ({cause})", "choose a folder you can write") from None
