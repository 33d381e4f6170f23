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


SEARCHES = ("random", "optuna", "asha", "pbt")


def goals(trials, arms, plain_passes: float, method: str = "adalase") -> str:
    """The four goals for ``method`` on a task where the grid separates the arms, checked from a
    benchmark's trial rows (docs/adalase.md): its selected configuration favours the grid's best
    arm in >= 4 of 5 seeds; its test accuracy is within 1.0 point of the grid's pick (paired mean)
    with the CI's lower end at -2.0 or above; its compute is at most 2x a plain run and at most half
    the grid's; it is above every black-box search (paired mean > 0) at equal or lower compute."""
    import numpy as np

    from adalase_tune.report import grid_by_site, method_table, paired_differences, top_arms

    table, _ = method_table(trials, plain_passes)
    cost = table.set_index("method")["plain_run_multiple"]
    best = grid_by_site(trials, arms)["val"].idxmax()
    tops = top_arms(trials, arms)
    mine = tops[tops["method"] == method]
    found = int((mine["top"] == best).sum())
    searches = [s for s in SEARCHES if s in cost.index]
    paired = paired_differences(trials, against=("grid", *searches)).set_index(["method", "against"])

    def diff(ref):
        r = paired.loc[(method, ref)]
        return r["mean_diff"], r["ci_low"], r["ci_high"]

    g_mean, g_low, g_high = diff("grid")
    checks = [
        (
            f"favours the grid's best arm `{best}` in ≥ 4 of 5 seeds",
            found >= int(np.ceil(0.8 * len(mine))),
            f"{found}/{len(mine)}",
        ),
        (
            "test accuracy within 1.0 point of the grid's pick, CI lower end ≥ −2.0",
            g_mean >= -0.01 and g_low >= -0.02,
            f"{100 * g_mean:+.2f} [{100 * g_low:+.2f}, {100 * g_high:+.2f}]",
        ),
        (
            "compute ≤ 2× a plain run and ≤ half the grid's",
            cost[method] <= 2 and cost[method] <= cost["grid"] / 2 + 1e-9,
            f"{cost[method]:.2f}× (grid {cost['grid']:.2f}×)",
        ),
    ]
    for s in searches:
        m, lo, hi = diff(s)
        checks.append(
            (
                f"above `{s}` at equal or lower compute",
                m > 0 and cost[method] <= cost[s] + 1e-9,
                f"{100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] at {cost[method]:.2f}× vs {cost[s]:.2f}×",
            )
        )
    lines = [
        f"Goals for `{method}` (paired by seed, test accuracy in points, bootstrap 95% CI):",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {goal} | {value} | {'yes' if ok else '**no**'} |" for goal, ok, value in checks]
    lines += [
        "",
        "'Above' is judged on the paired mean; where the CI reaches below 0 the lead is within the seed noise.",
    ]
    return "\n".join(lines) + "\n"
