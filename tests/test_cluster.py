"""Real clusters on this machine: a `ray start --head` on 127.0.0.1, a worker node that joins it from
its own mount namespace where the driver's project and working folders are hidden (tmpfs), storage
on an S3-compatible server (moto) on 127.0.0.1, MLflow in a SQLite file only the driver sees.

The namespaced worker needs `unshare -m` (root, as CI is); the tests that need it skip, with the
reason, where it is not permitted.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import spawn, stop_group

# on one xdist worker: its clusters and `ray start`'s address file in /tmp/ray are the machine's
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unshare_permitted() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _ray_start(*args) -> int:
    """`ray start --block` under the fixtures' guard (conftest.spawn), in a process group of its own;
    returns once the node is up, with the group, whose kill stops exactly the daemons it started
    (never `ray stop`, which stops every Ray on the machine, the test session's too). The guard
    takes the group down with the test process, however that ends: a killed test run leaves no Ray."""
    proc = spawn(
        [
            str(PYTHON),
            "-m",
            "ray.scripts.scripts",
            "start",
            *args,
            *(["--include-dashboard=false"] if "--head" in args else []),
            "--disable-usage-stats",
            "--block",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "token"},  # what a node joining by address needs
    )
    assert proc.stdout is not None
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:  # drain the output for the node's whole life, so that it never blocks on a full pipe
        for line in proc.stdout:
            seen.append(line)
            if "will now block forever" in line:  # printed once the node is up and its address written
                started.set()
        started.set()  # it ended

    threading.Thread(target=read, daemon=True).start()
    started.wait(timeout=300)
    assert proc.poll() is None and any("will now block forever" in line for line in seen), "".join(seen)[-2000:]
    return proc.pid


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(scope="module")
def restore_ray_address():
    """`ray start` leaves its address in /tmp/ray for a later plain ray.init(): put back what was there."""
    saved = ADDRESS_FILE.read_text() if ADDRESS_FILE.is_file() else None
    yield
    if saved is None:
        ADDRESS_FILE.unlink(missing_ok=True)
    else:
        ADDRESS_FILE.write_text(saved)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-compatible server (moto) on 127.0.0.1, with a bucket; yields the storage URI."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(PYTHON.parent))
    proc = spawn([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(creds)
    deadline = time.time() + 60
    while True:
        try:
            import boto3

            boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="adalase")
            break
        except Exception:
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.5)
    yield f"s3://adalase/runs?endpoint_override=127.0.0.1:{port}&scheme=http"
    stop_group(proc)


@pytest.fixture(scope="module")
def head(restore_ray_address):
    """A head with no CPUs for trials: the driver's node runs none, so a trial must go where a test sends it
    (with one CPU here, warm actors on the head could take every trial before a slow node starts one)."""
    port = free_port()
    # a short folder: Ray's socket paths must fit in 107 bytes, and pytest-xdist adds popen-gwN/ to pytest's
    temp = Path(tempfile.mkdtemp(prefix="ray_head", dir="/tmp"))
    group = _ray_start("--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={temp}")
    yield f"127.0.0.1:{port}"
    _kill_group(group)
    shutil.rmtree(temp, ignore_errors=True)


class HiddenWorker:
    """A worker node in its own mount namespace: tmpfs over the project and the driver's working
    folder; the package comes from a copy outside them (as if installed on that node)."""

    def __init__(self, address: str, hide: list, scratch: Path, cpus: int = 2):
        self.venv, self.src = scratch / "venv", scratch / "site"
        self.venv.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "adalase_tune", self.src / "adalase_tune", dirs_exist_ok=True)
        mounts = " && ".join(
            [f"mount --bind {PYTHON.parent.parent} {self.venv}"] + [f"mount -t tmpfs tmpfs {h}" for h in hide]
        )
        check = " && ".join(f'test -z "$(ls -A {h})"' for h in hide)  # really hidden
        script = (
            f"{mounts} && {check} && exec env RAY_AUTH_MODE=token PYTHONPATH={self.src} {self.venv}/bin/python -m "
            f"ray.scripts.scripts start --address={address} --num-cpus={cpus} --disable-usage-stats --block"
        )
        self.proc = spawn(  # `ray start --block`: it and its daemons go with the test process
            ["unshare", "-m", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


def _nodes(address: str) -> dict:
    """{node id: CPUs} of the cluster's live nodes (asked from a separate process)."""
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
        "print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']}))"
    )
    out = subprocess.run(
        [str(PYTHON), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_for_nodes(address: str, n: int, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        nodes = _nodes(address)
        if len(nodes) >= n:
            return nodes
        assert time.time() < deadline, f"the cluster has {len(nodes)} nodes, not {n}"
        time.sleep(1)


def _sweep(workdir: Path, address: str, storage: str, name: str, extra=(), env=None, **kwargs):
    cmd = [
        str(PYTHON),
        "-m",
        "adalase_tune",
        "sweep",
        str(ROOT / "search_spaces/digits.yaml"),
        "--method",
        "random",
        "--num-samples",
        "6",
        "--seeds",
        "1",
        "--max-concurrent",
        "3",
        "--set",
        "train.epochs=4",
        "--set",
        "data.n_train=300",
        "--set",
        "model.width=8",
        "--address",
        address,
        "--storage",
        storage,
        "--name",
        name,
        "--out",
        "out",
        "--tracking-uri",
        "sqlite:///mlflow.db",
        "--experiment",
        "cluster",
        "--checkpoint-s",
        "0",
        "--max-failures",
        "3",
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "token", **(env or {})},
        **kwargs,
    )


@pytest.mark.skipif(not _unshare_permitted(), reason="`unshare -m` is not permitted here (it needs root)")
def test_a_sweep_on_a_node_that_shares_no_files_with_the_driver(head, s3, tmp_path):
    workdir = tmp_path / "driver"
    workdir.mkdir()
    worker = HiddenWorker(head, [str(ROOT), str(workdir)], tmp_path / "node")
    try:
        nodes = _wait_for_nodes(head, 2)
        hidden = next(node for node, cpus in nodes.items() if cpus == 2)
        proc = _sweep(workdir, head, s3, "nofiles")
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        rows = pd.read_csv(workdir / "out/results.csv")
        assert len(rows) == 6 and (rows["status"] == "TERMINATED").all()
        assert set(rows["node_id"]) == {hidden}  # the only node with CPUs: every trial ran where files are hidden
        client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
        runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id], max_results=100)
        trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
        assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in runs)
        assert hidden in {r.data.tags.get("node_id") for r in trials}
        assert not list(workdir.glob("**/*.pt"))  # checkpoints went to the bucket, not to the driver's folder

        # the user's own model, importable only on the driver (tests/userpkg is hidden on the node):
        # the driver ships it to the cluster (Ray's py_modules), nothing is installed there
        user = ["--set", "model.name=userpkg.models:build_cnn", "--num-samples", "2"]
        proc = _sweep(workdir, head, s3, "usercode", extra=user, env={"PYTHONPATH": str(ROOT / "tests")})
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        rows = pd.read_csv(workdir / "out/results.csv")
        assert len(rows) == 2 and (rows["status"] == "TERMINATED").all() and set(rows["node_id"]) == {hidden}

        # losing the hidden node mid-sweep: its trials resume on another node from their checkpoints in the bucket
        plain = _ray_start("--address", head, "--num-cpus=1")
        _wait_for_nodes(head, 3)
        proc = _sweep(workdir, head, s3, "nodeloss", extra=["--set", "train.epochs=12"])
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "trial 1/6 done" in line:
                worker.stop()
                break
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, ("".join(lines) + err)[-3000:]
        rows = pd.read_csv(workdir / "out/results.csv")
        assert (rows["status"] == "TERMINATED").all() and (rows["epochs"] == 12).all()
    finally:
        worker.stop()
        if "plain" in locals():
            _kill_group(plain)


def test_a_driver_killed_mid_sweep_resumes_from_the_bucket(s3, tmp_path):
    """No cluster needed: a local Ray, storage on the S3 server; kill -9 the driver, --resume."""
    cmd = [
        str(PYTHON),
        "-m",
        "adalase_tune",
        "sweep",
        str(ROOT / "search_spaces/digits.yaml"),
        "--method",
        "random",
        "--num-samples",
        "6",
        "--seeds",
        "1",
        "--set",
        "train.epochs=4",
        "--set",
        "data.n_train=60",
        "--set",
        "model.width=4",
        "--storage",
        s3,
        "--name",
        "killed",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
        "--experiment",
        "s3",
        "--checkpoint-s",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "trial 2/6 done" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "random: 6/6 trials finished; results in s3://adalase/runs" in resumed.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([client.get_experiment_by_name("s3").experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert len(trials) == 6 and len({r.data.tags["ray.trial_id"] for r in trials}) == 6
    assert all(r.info.status == "FINISHED" for r in trials)


def test_joining_a_cluster_without_its_token_is_one_line_that_says_what_to_set(head, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}  # as a new shell has it
    done = subprocess.run(
        [
            str(PYTHON),
            "-m",
            "adalase_tune",
            "sweep",
            str(ROOT / "search_spaces/digits.yaml"),
            "--method",
            "uniform",
            "--address",
            head,
            "--storage",
            str(tmp_path / "ray"),
            "--no-tracking",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"adalase-tune: error: --address = '{head}'") and "RAY_AUTH_MODE=token" in lines[-1]
    assert "Traceback" not in done.stderr


def test_a_stale_cluster_left_by_ray_start_does_not_hang_a_local_sweep(restore_ray_address, tmp_path):
    """A head started with `ray start` and then killed leaves its address behind; a sweep without
    --address must start its own Ray, not wait for the dead one."""
    port = free_port()
    group = _ray_start("--head", f"--port={port}", "--num-cpus=1")  # the default temp dir: it records its address
    assert ADDRESS_FILE.is_file() and str(port) in ADDRESS_FILE.read_text()
    _kill_group(group)  # kill -9: no `ray stop` to clean up after it
    time.sleep(2)
    assert str(port) in ADDRESS_FILE.read_text()  # the stale address is still there
    start = time.time()
    done = subprocess.run(
        [
            str(PYTHON),
            "-m",
            "adalase_tune",
            "sweep",
            str(ROOT / "search_spaces/digits.yaml"),
            "--method",
            "uniform",
            "--set",
            "train.epochs=1",
            "--set",
            "data.n_train=60",
            "--storage",
            str(tmp_path / "ray"),
            "--no-tracking",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.time() - start < 120 and re.search(r"uniform: 3/3 trials finished", done.stdout)  # digits.yaml: 3 seeds
