"""Wall time of the test tiers, as scripts/test.sh runs them: the fast tier (`--fast`, pytest -m
"not slow") and the full suite, with their test counts, and how loaded the machine was (the load
average before and after each run).

    python benchmarks/test_tiers.py                 # both tiers, one after the other
    python benchmarks/test_tiers.py --tier fast     # the fast tier only
    python benchmarks/test_tiers.py --smoke-test    # both commands on one small test file

The figures are only comparable on an otherwise idle machine: the file says what the load was.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent


def tier_command(tier: str) -> list[str]:
    """pytest as `bash scripts/test.sh [--fast]` runs it (the same arguments, read from the script)."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    line = r'^\s*(?:exec )?\.venv/bin/python -m pytest (.*?) ?"\$@"\s*#\s*tier: (\w+)'
    found = {tier: args for args, tier in re.findall(line, script, re.M)}
    if tier not in found:
        raise SystemExit(f"scripts/test.sh has no pytest line marked '# tier: {tier}'")
    return [sys.executable, "-m", "pytest", *shlex.split(found[tier])]


def run_tier(tier: str, extra: list[str]) -> dict:
    cmd = tier_command(tier) + extra
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = dict((name, int(n)) for n, name in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail))
    if proc.returncode not in (0, 1) or not counts.get("passed"):
        raise SystemExit(f"{tier}: pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {
        "tier": tier,
        "command": "python " + shlex.join(cmd[1:]),
        "wall": wall,
        "counts": counts,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "summary": tail.strip("= "),
        "failed": [line for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=["fast", "full", "both"], default="both")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results file")
    parser.add_argument("--smoke-test", action="store_true", help="each tier's command on tests/test_config.py")
    args = parser.parse_args()
    extra = ["tests/test_config.py", "-p", "no:cacheprovider"] if args.smoke_test else []
    tiers = ["fast", "full"] if args.tier == "both" else [args.tier]
    results = [run_tier(t, extra) for t in tiers]
    rows = "\n".join(
        f"| {r['tier']} | `{r['command']}` | **{r['wall']:.0f} s ({r['wall'] / 60:.1f} min)** | "
        f"{r['counts'].get('passed', 0)} passed, {r['counts'].get('skipped', 0)} skipped, "
        f"{r['counts'].get('failed', 0)} failed | {r['load_before']:.1f} / {r['load_after']:.1f} |"
        for r in results
    )
    cores = os.cpu_count()
    body = (
        f"Wall time of each tier as `bash scripts/test.sh` runs it (after the install), on {cores} cores. "
        "Load: the 1-minute load average before / after the run (the run itself adds about 2 on 2 cores; "
        "well above that, other work shared the machine, the wall times are inflated accordingly and "
        "compare only with each other).\n\n"
        + (f"Machine state: {args.note}\n\n" if args.note else "")
        + "| tier | command | wall time | tests | load before / after |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "pytest's own summaries:\n\n"
        + "\n".join(f"- {r['tier']}: `{r['summary']}`" for r in results)
        + "".join(f"\n  - `{line}`" for r in results for line in r["failed"])
        + "\n"
    )
    path = write_result("test_tiers", "Test tiers: wall time", body, args.smoke_test)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
