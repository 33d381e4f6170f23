"""A server a fixture starts dies with the test process, even when no teardown runs: a CI timeout
or a SIGKILL of pytest must leave no `mlflow server` (nor its workers) behind."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import group_alive

HERE = Path(__file__).parent

HOLD = """
import os, time
from pathlib import Path


def test_hold(mlflow_server):
    Path(os.environ["SERVER_PID"]).write_text(str(mlflow_server.pid))
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_pytest_leaves_no_mlflow_server_of_its_fixture_running(tmp_path):
    """pytest in a subprocess on a file that uses the ``mlflow_server`` fixture; once the server
    answers, SIGKILL the pytest process (no teardown runs): the server's whole process group (the
    CLI, uvicorn, MLflow's job runner) is gone within seconds."""
    (tmp_path / "test_hold.py").write_text(HOLD)
    pid_file = tmp_path / "server.pid"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env.update(SERVER_PID=str(pid_file), PYTHONPATH=str(HERE))  # a pytest of its own, not an xdist worker
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider"]
    cmd += ["--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_hold.py")]
    pytest_proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while not pid_file.exists():
            assert pytest_proc.poll() is None, pytest_proc.stdout.read()
            assert time.monotonic() < deadline, "the fixture's server did not come up"
            time.sleep(0.2)
        server = int(pid_file.read_text())
        assert group_alive(server)
        pytest_proc.send_signal(signal.SIGKILL)  # only pytest: its children are left to themselves
        pytest_proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while group_alive(server):
            assert time.monotonic() < deadline, "the mlflow server outlived the killed pytest"
            time.sleep(0.2)
    finally:
        for group in [pytest_proc.pid] + [int(pid_file.read_text())] * pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
