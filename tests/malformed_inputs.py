"""Run the CLI on malformed inputs in one process; print one JSON line per case.

Run by tests/test_reliability.py: each case must exit 2 with one stderr line, no traceback,
and Ray must not have been started.
"""
import contextlib
import io
import json
import sys

import ray

from adalase_tune.cli import main

cases = json.loads(sys.argv[1])
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as exc:  # a traceback would escape here
            code = f"raised {type(exc).__name__}: {exc}"
    print(json.dumps({"argv": argv, "code": code, "stderr": err.getvalue(), "ray": ray.is_initialized()}))
