"""Wall time of the main job, as `bash scripts/main.sh` runs it after the install (the benchmark
command that script runs, read from it), and the seconds each method takes, from the command's own
progress lines ("[k/N] method: running (Ns elapsed)").

    python benchmarks/main_job.py                # the main job, in a temporary folder
    python benchmarks/main_job.py --smoke-test   # the same command: 2 methods, 1 seed of 2 epochs

The figures are only comparable on an otherwise idle machine: the file says what the load was.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent


def main_command() -> list[str]:
    """The benchmark command of scripts/main.sh (its last line, `exec .venv/bin/adalase-tune ...`)."""
    line = (ROOT / "scripts" / "main.sh").read_text().strip().splitlines()[-1]
    found = re.match(r"exec \.venv/bin/adalase-tune (benchmark \S+)", line)
    if not found:
        raise SystemExit(f"scripts/main.sh does not end in the benchmark command: {line!r}")
    return [str(ROOT / ".venv" / "bin" / "adalase-tune"), *shlex.split(found.group(1))]


def method_seconds(stderr: str, wall: float) -> list[tuple[str, float]]:
    """Each method's seconds, from the elapsed time at which it and the next one began."""
    starts = [(m, float(s)) for m, s in re.findall(r"^\[\d+/\d+\] (\S+): running \((\d+)s elapsed\)", stderr, re.M)]
    ends = [s for _, s in starts[1:]] + [wall]
    first = [("before the first method: the checks, Ray's start", starts[0][1])] if starts else []
    return first + [(m, end - s) for (m, s), end in zip(starts, ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results file")
    args = parser.parse_args()
    smoke = ["--seeds", "1", "--methods", "adalase,uniform", "--set", "train.epochs=2"]
    cmd = main_command() + (smoke if args.smoke_test else [])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "search_spaces").symlink_to(ROOT / "search_spaces")
        cmd += ["--out", f"{tmp}/out", "--name", "main", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"the main job exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    shown = shlex.join(["adalase-tune", *cmd[1:]]).replace(tmp, "<tmp>")
    rows = "".join(f"| {m} | {s:.0f} s | {s / wall:.0%} |\n" for m, s in method_seconds(proc.stderr, wall))
    body = (
        f"`{shown}` (what `bash scripts/main.sh` runs, after the install), in a fresh folder. Load: the "
        f"1-minute load average before / after, {load_before:.1f} / {load_after:.1f} (the job itself adds about 2 "
        "on 2 cores).\n\n"
        + (f"Machine state: {args.note}\n\n" if args.note else "")
        + f"**Wall time: {wall:.0f} s ({wall / 60:.1f} min)**; target: 3 minutes (issue 23).\n\n"
        "Each method's share, from the command's progress lines (the last one's holds the report):\n\n"
        "| method | seconds | share |\n|---|---|---|\n" + rows
    )
    path = write_result("main_job", "The main job: wall time", body, args.smoke_test)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
