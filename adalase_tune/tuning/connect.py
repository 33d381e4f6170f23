"""Joining Ray: a private local Ray or a cluster (``--address``), the checks that something answers
and that a trial fits on some node, the token file, and the object store (:func:`put`).

Example::

    connect()  # a private local Ray, once per process
    check_resources(SweepOptions(cpus_per_trial=2))
    data_ref = put(build_data(cfg.data))
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..config import ConfigError

if TYPE_CHECKING:
    from .tuner import SweepOptions

TOKEN_HINT = (
    "a cluster started by `ray start` uses token authentication (Ray's default): in this shell set "
    "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token "
    "that `ray start` wrote on the head node)"
)


def private_token() -> None:
    """Ray's session token file (``~/.ray/auth_token``, which Ray writes 0644) made readable by
    this user only: with it anyone on the machine could join the local Ray and run code in it."""
    path = Path.home() / ".ray" / "auth_token"
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(0o600)


def _quiet_tune() -> None:
    """Process settings of Tune, before it starts."""
    import logging

    # Tune's default loggers write CSV, JSON and TensorBoard files per trial (with an fsync per
    # result); the Tuner keeps only the JSON one (result.json, which ResultGrid reads)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune snapshots its state whenever a trial's old checkpoints are dropped, which keeps a resume
    # consistent; with frequent checkpoints it then warns at every snapshot: the snapshots stay
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune warns when one of its steps (a callback, a result) took over 0.5 s, "a performance
    # bottleneck": on a loaded machine that is every few seconds, in the middle of the sweep's own
    # progress lines; ray_overhead.md measures where the time goes instead
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "30")
    # PBT's exploits make the JSON logger look for a donor's result.json before it exists: harmless
    logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)


def _runtime_env(address: Optional[str]) -> Optional[dict]:
    """What Ray's workers need to import what this process imports (a model.name such as
    mypkg.models:build). A cluster's nodes get a copy of the user's own modules (py_modules) and
    re-import the ones that registered names; a local Ray's workers get the user's folders of
    sys.path on their PYTHONPATH and re-import those modules on a name's first use."""
    from ..references import IMPORTS_VAR, import_path, registering_modules, user_code

    if address:
        shipped = user_code()
        env: dict[str, Any] = {"py_modules": shipped} if shipped else {}
        if registering_modules():
            env["env_vars"] = {IMPORTS_VAR: ",".join(registering_modules())}
        return env or None
    found = {"PYTHONPATH": os.pathsep.join(import_path()), IMPORTS_VAR: ",".join(registering_modules())}
    found = {k: v for k, v in found.items() if v}
    return {"env_vars": found} if found else None


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, timeout_s: float = 60.0) -> None:
    """Start a private local Ray (``address="local"``: never a stale cluster that ``ray start``
    left behind) without a dashboard, or join ``address`` after checking that something answers
    there; once per process. Errors are one line (:class:`ConfigError`). Ray binds some of its
    servers to every interface and rewrites 127.0.0.1 to the machine's address, so it cannot be
    confined to loopback; its token authentication guards them (SECURITY.md). A local Ray's
    workers get this process's own import folders (``references.import_path``): a model or dataset given
    as ``module:attr`` imports there as it does here."""
    import ray

    from .recovery import keep_sigterm

    _quiet_tune()
    if address:
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return
    # trials' own output stays in Ray's logs: failures come back with their reason in the results
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    try:
        keep_sigterm()
        if address:
            ray.init(address=address, runtime_env=_runtime_env(address), **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, runtime_env=_runtime_env(None), **kwargs)
            private_token()
    except Exception as err:  # ConnectionError, AuthenticationError, RuntimeError, TimeoutError, ...
        ray.shutdown()
        raise _connect_error(err, address, timeout_s) from None


def _connect_error(err: Exception, address: Optional[str], timeout_s: float) -> ConfigError:
    text = " ".join(str(err).split())
    no_token = address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token"
    if "auth" in text.lower() or "token" in text.lower() or no_token:
        # a driver given an address does not use token authentication unless told to; Ray
        # then retries for half a minute and reports only a ConnectionError
        return ConfigError(f"--address = {address!r}: could not join ({type(err).__name__}); {TOKEN_HINT}")
    where = f"--address = {address!r}" if address else "local Ray"
    return ConfigError(
        f"{where}: could not connect within {timeout_s:.0f} s ({type(err).__name__}: "
        f"{text[:200]}); check the address and that the cluster is up (`ray status`)"
    )


def check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connection to ``address`` (host:port or ray://host:port) within ``timeout_s``: Ray's own
    connect retries for many minutes when nothing listens there."""
    import socket

    if address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address = {address!r}: expected host:port (a cluster's GCS, e.g. 10.0.0.5:6379) or "
            "ray://host:10001 (a Ray client server)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout_s, 15.0)):
            pass
    except OSError as err:
        raise ConfigError(
            f"--address = {address!r}: nothing answers there ({err.strerror or err}); check the address "
            "and that the cluster is up (`ray status` on its head node)"
        ) from None


def check_resources(options: SweepOptions) -> None:
    """Fail at once when no node of the cluster could ever run one trial (instead of hanging)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    if options.gpus_per_trial > most_gpu:
        raise ConfigError(
            f"--gpus-per-trial = {options.gpus_per_trial}, but the largest node of this Ray cluster "
            f"has {most_gpu:g} GPUs; lower it (fractions like 0.5 share a GPU) or add GPU nodes"
        )
    if options.cpus_per_trial > most_cpu:
        raise ConfigError(
            f"--cpus-per-trial = {options.cpus_per_trial}, but the largest node of this Ray cluster "
            f"has {most_cpu:g} CPUs; lower it"
        )
    w = options.workers_per_trial
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    if w > 1 and (w * options.cpus_per_trial > total_cpu or w * options.gpus_per_trial > total_gpu):
        raise ConfigError(
            f"--workers-per-trial = {w} with {options.cpus_per_trial:g} CPUs and {options.gpus_per_trial:g} GPUs "
            f"per worker needs {w * options.cpus_per_trial:g} CPUs and {w * options.gpus_per_trial:g} GPUs, but "
            f"this Ray cluster has {total_cpu:g} CPUs and {total_gpu:g} GPUs; lower --workers-per-trial or the "
            "resources per worker"
        )


def put(value: Any) -> Any:
    """Put ``value`` in the Ray object store once; trials get it by reference."""
    import ray

    return ray.put(value)
