"""The MLflow UI: ``adalase-tune ui`` (an ``mlflow server`` on 127.0.0.1 that ends with it), and
the runs table's comparison view that every experiment adalase-tune logs to carries.

Example::

    serve_ui("sqlite:///mlflow.db", 5000)  # until Ctrl-C; prints the URL of each comparison view
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from .. import keys
from ..config import ConfigError
from ..interrupts import STOP_SIGNALS
from .store import _client, _retry, check_tracking_uri

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view
VIEW_KEY = "comparison"  # the shared view of the runs table: ?viewStateShareKey=comparison
COMPARISON_COLUMNS = (  # metrics of the method parent runs, shown as columns by the shared view
    "test_acc_selected",
    keys.COST_PLAIN_RUN_MULTIPLE,
    "answer_found",
    "test_acc_selected_std",
    "best_val_acc",
)


def comparison_view() -> str:
    """The runs table's view state with the comparison's columns first, as MLflow's "Share" button
    stores it (the experiment tag ``mlflow.sharedViewState.<key>``, opened by ``?viewStateShareKey=<key>``)."""
    columns = [f"metrics.`{m}`" for m in COMPARISON_COLUMNS] + ["tags.`benchmark`", "tags.`seeds`"]
    widths = {c: 180 if "cost/" in c else 130 for c in columns}
    return json.dumps({"selectedColumns": columns, "columnOrder": columns, "columnWidths": widths})


def comparison_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the comparison view, with the UI in its model-training mode."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def print_comparisons(uri: str, base: str) -> None:
    """One line per experiment that adalase-tune logged to: the URL of its comparison view."""
    client = _client(uri)
    for exp in _retry(client.search_experiments):
        if f"mlflow.sharedViewState.{VIEW_KEY}" in exp.tags:
            print(f"  {exp.name}: the methods compared at {comparison_url(base, exp.experiment_id)}", flush=True)


def _wait_server(proc: subprocess.Popen, received: list, grace_s: float = 10.0) -> int:
    """Wait for the server; once a signal was forwarded, give it ``grace_s`` to stop, then kill its group."""
    import signal

    since = None
    while proc.poll() is None:
        if received and since is None:
            since = time.monotonic()
        if since is not None and time.monotonic() - since > grace_s:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
    return proc.returncode


# The process between ``ui`` and ``mlflow server``, in the server's process group: it asks the
# kernel for SIGTERM when ``ui`` dies, even of SIGKILL (PR_SET_PDEATHSIG, Linux), and on SIGTERM,
# SIGINT or SIGHUP stops the whole group. The death signal alone reaches one child only, and the
# server, told to stop, leaves its job runner's huey consumers behind.
GUARD = """
import os, signal, subprocess, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        os.killpg(0, signal.SIGKILL)  # ui died before the line above
server = subprocess.Popen(sys.argv[2:])
def stop(signum, frame):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    finally:
        os.killpg(0, signal.SIGKILL)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, stop)
sys.exit(server.wait())
"""


def serve_ui(uri: str, port: int, startup_s: float = 90.0) -> int:
    """Run ``mlflow server`` for ``uri`` on 127.0.0.1:``port`` (its own output goes to stderr) until
    it exits or a signal arrives; SIGINT and SIGTERM are forwarded to the server's whole process
    group and the exit code is then 128 + the signal. Returns 1, with one line, when the server
    does not come up."""
    import os
    import signal

    uri = check_tracking_uri(uri)
    if not 0 < port < 65536:
        raise ConfigError(f"--port = {port}: choose a port in 1..65535")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise ConfigError(f"--port = {port}: something already listens on 127.0.0.1:{port}; choose another port")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", GUARD, str(os.getpid()), *cmd], stdout=sys.stderr, start_new_session=True
    )
    received: list = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    catchable = STOP_SIGNALS + tuple(getattr(signal, n) for n in ("SIGQUIT",) if hasattr(signal, n))
    previous = {sig: signal.signal(sig, forward) for sig in catchable}
    try:
        deadline = time.monotonic() + startup_s
        while proc.poll() is None and time.monotonic() < deadline and not received:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    home = f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
                    print(f"MLflow UI for {uri} at {home} (Ctrl-C to stop)", flush=True)
                    print_comparisons(uri, f"http://127.0.0.1:{port}")
                    code = _wait_server(proc, received)
                    return 128 + received[0] if received else code
            time.sleep(0.2)
        if received:
            proc.wait(timeout=30)
            return 128 + received[0]
        print(
            f"adalase-tune: error: the MLflow server did not come up on 127.0.0.1:{port} within {startup_s:.0f} s "
            f"(exit code {proc.poll()}); see its output above",
            file=sys.stderr,
        )
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
