"""Run the CLI on malformed inputs in one process; print one JSON line per case.

Run by tests/test_reliability.py with a list of (argv, case folder). Each case must exit 2
with one stderr line and no traceback, and leave its case folder empty (no MLflow store, no
storage folder). Whether the case started Ray is recorded.
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import ray

from adalase_tune.cli import main

for argv, case in json.loads(sys.argv[1]):
    err = io.StringIO()
    before = ray.is_initialized()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as exc:  # a traceback would escape here
            code = f"raised {type(exc).__name__}: {exc}"
    started = ray.is_initialized() and not before
    if started:
        ray.shutdown()  # each case starts from a process without Ray, as a command does
    created = sorted(str(p.relative_to(case)) for p in Path(case).rglob("*"))
    print(
        json.dumps({"argv": argv, "code": code, "stderr": err.getvalue(), "ray": started, "created": created}),
        flush=True,
    )
