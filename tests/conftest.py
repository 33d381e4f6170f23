"""Shared fixtures: tiny configs on the embedded digits data, so the default run is fast."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from adalase_tune.config import from_dict
from adalase_tune.tracking.ui import GUARD  # the guard between a fixture's server and the test process


def override(tree: dict, overrides: dict) -> dict:
    """``tree`` with ``{"section.name": value}`` overrides set in place (sections created as needed)."""
    for key, value in overrides.items():
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = value
    return tree


# the paper's one-run form of AdaLASE (the default adds a retrain and holds pseudo-validation data
# out): for tests of the AdaLASE step itself
ONE_RUN = {"adalase.retrain": False, "adalase.val_source": "train"}


def tiny_config(**overrides):
    """A digits config that trains in well under a second per epoch on CPU."""
    tree = {
        "data": {"name": "digits", "n_train": 100},
        "model": {"name": "cnn", "width": 4},
        "selection": {"method": "uniform"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 0, "device": "cpu"},
    }
    return from_dict(override(tree, overrides))


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(autouse=True, scope="session")
def _tracking_in_a_temporary_folder(tmp_path_factory):
    """No test writes mlflow.db into the working folder: the default store is a temporary one."""
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/default.db"
    yield


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # stable timings on 2 cores, and the same results every time
    yield


def onehot(y, k):
    return torch.nn.functional.one_hot(torch.as_tensor(y), k).float()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (ray.init costs seconds)."""
    import ray

    from adalase_tune.tuning import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


def tiny_tree(**overrides):
    return tiny_config(**overrides).to_dict()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list, **kwargs) -> subprocess.Popen:
    """A server or daemon for a fixture, in a process group of its own (its pid, the guard's, is
    the group's id), that dies with the test process however that ends; teardown: stop_group()."""
    return subprocess.Popen([sys.executable, "-c", GUARD, str(os.getpid()), *cmd], start_new_session=True, **kwargs)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still running (zombies, already dead, aside)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
    """Teardown: ``sig`` to the whole group, then SIGKILL to whatever of it is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    deadline = time.monotonic() + grace_s
    while (proc.poll() is None or group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Server:
    url: str
    pid: int


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend, for the session (or each xdist
    worker): its own port and folder; it dies with the test process (tests/test_servers.py)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/server.db"]
    cmd += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(cmd + ["--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        stop_group(proc, signal.SIGKILL)
        pytest.fail("mlflow server did not start")
    yield Server(url, proc.pid)
    stop_group(proc)
