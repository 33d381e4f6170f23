"""Every benchmark script runs in --smoke-test mode (thin programs over the public API), and
every script has its committed results."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_has_committed_results_naming_its_command(script):
    result = ROOT / "benchmarks" / "results" / f"{Path(script).stem}.md"
    assert result.is_file(), f"run `python benchmarks/{script}` and commit {result.name}"
    text = result.read_text()
    assert f"- command: `python benchmarks/{script}" in text and "- machine: " in text


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_test(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke-test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "ADALASE_BENCH_OUT": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = Path(proc.stdout.strip().splitlines()[-1].removeprefix("wrote "))
    assert written.parent == tmp_path and written.read_text().startswith("# ")
    assert "- command: `python benchmarks/" in written.read_text()
