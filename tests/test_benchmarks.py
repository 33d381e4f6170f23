"""Every benchmark script runs in --smoke-test mode (thin programs over the public API)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_is_listed():
    assert {"overhead.py", "cost.py", "sites.py", "presets.py", "ray_overhead.py", "mlflow_overhead.py", "load.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_test(script, tmp_path):
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke-test"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "ADALASE_BENCH_OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = Path(proc.stdout.strip().splitlines()[-1].removeprefix("wrote "))
    assert written.parent == tmp_path and written.read_text().startswith("# ")
    assert "- command: `python benchmarks/" in written.read_text()
