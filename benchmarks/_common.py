"""Shared bits of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    """Python and the libraries' versions ("not installed" where one is missing, as Ray and MLflow
    may be on a GPU machine that runs only the engine)."""
    import importlib

    found = []
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow"):
        try:
            found.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            found.append(f"{name} not installed")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def write_result(name: str, title: str, body: str, smoke: bool) -> Path:
    """Write ``results/<name>.md`` with the command, machine and versions (smoke runs: a temp file)."""
    head = (
        f"# {title}\n\n- command: `python {' '.join(['benchmarks/' + Path(sys.argv[0]).name] + sys.argv[1:])}`\n"
        f"- machine: {machine()}\n- versions: {versions()}\n\n"
    )
    path = (Path(os.environ.get("ADALASE_BENCH_OUT", tempfile.gettempdir())) if smoke else RESULTS) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + body)
    return path


def synthetic_cifar(path: Path, n: int, n_test: int = 256) -> str:
    """An npz of ``n`` random CIFAR-shaped training images (10 classes) and ``n_test`` test images:
    a timing workload, not a learning one. Returns its path."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((n, 3, 32, 32), dtype=np.float32),
        y_train=rng.integers(0, 10, n),
        x_test=rng.random((n_test, 3, 32, 32), dtype=np.float32),
        y_test=rng.integers(0, 10, n_test),
    )
    return str(path)
