"""The ``adalase-tune`` command line: it parses arguments, calls one function of
:mod:`adalase_tune.experiment` per command, and maps the outcome to an exit code.

Exit codes: 0 done; 1 a trial or a later step failed (one line says why); 2 bad input (one
line names the field, the value and the fix; nothing was created); 128 + N after signal N
(130 for Ctrl-C, 143 for SIGTERM), with what finished and the exact resume command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional, cast

from .config import ConfigError
from .interrupts import STOP_SIGNALS, Interrupted, install_for_command
from .paths import StorageError  # not .checkpoint: that loads torch, and the CLI must not before its handlers

if TYPE_CHECKING:
    from .config import ExperimentConfig, SweepConfig
    from .tuning import SweepOptions

EXIT_FAILED, EXIT_USAGE = 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        print(f"adalase-tune: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. search_spaces/motifs.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set selection.method=adalase (repeatable)",
    )


def _add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)",
    )
    p.add_argument("--experiment", help="MLflow experiment name (default: the config file's name)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def _add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, help="number of seeds (0..S-1); default: the YAML's sweep.seeds or 1")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument(
        "--cpus-per-trial", type=float, help="CPUs per trial, per worker with --workers-per-trial (default 1)"
    )
    p.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial, per worker with --workers-per-trial; fractions allowed"
    )
    p.add_argument(
        "--workers-per-trial",
        type=int,
        help="run each trial as N data-parallel Ray Train workers; train.batch_size stays the global batch (default 1)",
    )
    p.add_argument(
        "--address", help="join this Ray cluster (host:port or ray://host:10001; default: a private local Ray)"
    )
    p.add_argument(
        "--storage",
        default="runs/ray",
        help="results and checkpoints: a path (shared on a cluster) or a URI such as s3://bucket/path",
    )
    p.add_argument("--name", help="experiment name, one path component (default: the method, or benchmark-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same --name")
    p.add_argument("--max-failures", type=int, default=2, help="restarts of a failed trial from its checkpoint")
    p.add_argument(
        "--checkpoint-s",
        type=float,
        default=30.0,
        help="seconds between a trial's checkpoints (PBT: at every perturbation)",
    )
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Ray Tune's own output level")
    p.add_argument(
        "--tolerate-failures",
        action="store_true",
        help="exit 0 when trials fail (they are listed); by default a failed trial exits 1 with its reason",
    )
    _add_tracking_args(p)
    p.add_argument(
        "--parent-run-id",
        metavar="RUN_ID",
        help="nest the MLflow runs under this run (its experiment is then the default --experiment)",
    )


def _one_of(names: list[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def build_parser() -> argparse.ArgumentParser:
    from .search import METHODS  # the one list of methods (light: no torch, Ray, numpy or MLflow)

    parser = _Parser(prog="adalase-tune", description="Learn where to apply latent data augmentation (AdaLASE).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one network with one selection policy")
    _add_config_args(t)
    t.add_argument("--out", help="write the summary JSON here")
    t.add_argument("--save-model", metavar="PATH", help="save the trained weights for model.checkpoint (transfer)")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="write DIR/last.pt after every epoch")
    t.add_argument("--resume", action="store_true", help="continue from DIR/last.pt of --checkpoint-dir")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel Ray Train workers on a local Ray (train.batch_size is the global batch; default 1)",
    )
    t.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker with --workers (default 0)")
    _add_tracking_args(t)
    t.add_argument(
        "--parent-run-id",
        metavar="RUN_ID",
        help="nest the MLflow run under this run (its experiment is then the default --experiment)",
    )
    s = sub.add_parser("sweep", help="run one search method on Ray Tune")
    _add_config_args(s)
    s.add_argument("--method", required=True, help=_one_of(METHODS.names()))
    s.add_argument("--num-samples", type=int, help="trials per seed for random/optuna/asha, population for pbt")
    s.add_argument("--out", metavar="DIR", help="also write results.csv (one row per trial) here")
    _add_ray_args(s)
    b = sub.add_parser("benchmark", help="compare methods on the same data, model, epochs and seeds")
    _add_config_args(b)
    b.add_argument("--methods", help="comma-separated, default: the YAML's sweep.methods or all")
    b.add_argument("--out", metavar="DIR", default="results", help="where results.csv, report.md and the plots go")
    _add_ray_args(b)
    r = sub.add_parser("report", help="rebuild report.md, results.csv and the plots from MLflow alone")
    r.add_argument("--experiment", required=True, help="MLflow experiment name")
    r.add_argument("--benchmark", help="one benchmark of the experiment (default: the latest)")
    r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    r.add_argument("--out", metavar="DIR", default="report", help="output folder")
    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 and print its URL")
    u.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    u.add_argument("--port", type=int, default=5000)
    return parser


def _tracking_uri(args: argparse.Namespace) -> Optional[str]:
    return None if getattr(args, "no_tracking", False) else (args.tracking_uri or "default")


def _experiment(args: argparse.Namespace) -> Optional[str]:
    """--experiment; by default the config file's name, or the parent run's experiment (None here)."""
    if args.experiment is None and getattr(args, "parent_run_id", None):
        return None
    return args.experiment or Path(args.config).stem


def _config(args: argparse.Namespace) -> ExperimentConfig:
    from .config import load_config
    from .data import DATASETS
    from .models import MODELS

    cfg = load_config(args.config, args.overrides, extra_sections=("sweep",))
    MODELS.get(cfg.model.name)  # a built-in, an entry point or module:attr that imports; else exit 2 here
    DATASETS.get(cfg.data.name)
    return cfg


def _options(args: argparse.Namespace, settings: SweepConfig, num_samples: Optional[int] = None) -> SweepOptions:
    from .tuning import SweepOptions

    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds = {args.seeds}: give at least 1")
    pick = lambda flag, value: flag if flag is not None else value  # noqa: E731
    return SweepOptions(
        seeds=list(range(args.seeds))
        if args.seeds is not None
        else list(cast(tuple, settings.seeds)),  # a tuple after its __post_init__
        num_samples=num_samples,
        budgets=settings.methods,
        max_concurrent=pick(args.max_concurrent, settings.max_concurrent),
        cpus_per_trial=pick(args.cpus_per_trial, settings.cpus_per_trial),
        gpus_per_trial=pick(args.gpus_per_trial, settings.gpus_per_trial),
        workers_per_trial=pick(args.workers_per_trial, settings.workers_per_trial),
        address=args.address,
        storage=args.storage,
        name=args.name,
        resume=args.resume,
        max_failures=args.max_failures,
        checkpoint_s=args.checkpoint_s,
        verbose=args.verbose,
    )


def resume_command(argv: list[str], name: str) -> str:
    """The exact command that resumes this one: the same arguments, the name made explicit, --resume."""
    import shlex

    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--name":
            skip = True
            continue
        if a.startswith("--name=") or a == "--resume":
            continue
        out.append(a)
    return shlex.join(["adalase-tune", *out, "--name", name, "--resume"])


def cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from .experiment import train

    summary = train(
        _config(args),
        out=args.out,
        save_model=args.save_model,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        tracking_uri=_tracking_uri(args),
        experiment=_experiment(args),
        progress=not args.quiet,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        parent_run_id=args.parent_run_id,
    )
    print(
        f"best val/acc {summary['best_val_acc']:.4f} (epoch {summary['best_epoch']}), "
        f"test/acc there {summary['test_acc_at_best_val']:.4f}, final test/acc {summary['final_test_acc']:.4f}"
        + (f"; q {[f'{v:.3f}' for v in summary['q_final']]}" if summary["q_final"] else "")
    )
    return 0


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from .config import load_sweep
    from .experiment import sweep
    from .search import METHODS
    from .tuning import join

    METHODS.get(args.method)
    options = _options(args, load_sweep(args.config), args.num_samples)
    name = options.name or args.method
    result = sweep(
        _config(args),
        args.method,
        options,
        out=args.out,
        tracking_uri=_tracking_uri(args),
        experiment=_experiment(args),
        resume_hint=resume_command(argv, name),
        tolerate_failures=args.tolerate_failures,
        parent_run_id=args.parent_run_id,
    )
    rows = result.rows
    ok = rows[rows["status"] == "TERMINATED"]
    print(f"{args.method}: {len(ok)}/{len(rows)} trials finished; results in {join(result.root, name)}")
    if len(ok):
        best = ok.loc[ok["best_val_acc"].idxmax()]
        print(
            f"best val/acc {best['best_val_acc']:.4f} (seed {best['seed']}), test/acc there "
            f"{best['test_acc_at_best_val']:.4f}; params {best['params']}"
        )
    for r in rows[rows["status"] != "TERMINATED"].itertuples():
        print(f"trial {r.trial_id} {r.status}: {r.error}", file=sys.stderr)
    return 0 if len(ok) == len(rows) or args.tolerate_failures else EXIT_FAILED


def cmd_benchmark(args: argparse.Namespace, argv: list[str]) -> int:
    import time

    from .config import load_sweep
    from .experiment import parse_methods, run_benchmark

    settings = load_sweep(args.config)
    methods = parse_methods(args.methods, list(settings.methods) or None)
    options = _options(args, settings)
    name = options.name or f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    from dataclasses import replace

    options = replace(options, name=name)
    result = run_benchmark(
        _config(args),
        methods,
        options,
        out=args.out,
        tracking_uri=_tracking_uri(args),
        experiment=_experiment(args),
        resume_hint=resume_command(argv, name),
        tolerate_failures=args.tolerate_failures,
        parent_run_id=args.parent_run_id,
    )
    print(Path(result.files["md"]).read_text())
    tracking_uri = _tracking_uri(args)
    if tracking_uri:
        from .tracking import default_uri

        uri = default_uri(tracking_uri)
        print(f"MLflow: experiment {_experiment(args) or 'of the parent run'!r} at {uri} (adalase-tune ui to browse)")
    print(f"wrote {', '.join(str(result.files[k]) for k in ('csv', 'md', 'png', 'curve_png'))}")
    failed = (result.trials["status"] != "TERMINATED").sum()
    for r in result.trials[result.trials["status"] != "TERMINATED"].itertuples():
        print(f"{r.method} trial {r.trial_id} {r.status}: {r.error}", file=sys.stderr)
    return 0 if not failed or args.tolerate_failures else EXIT_FAILED


def cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from .experiment import rebuild_report

    files = rebuild_report(args.experiment, args.benchmark, tracking_uri=args.tracking_uri or "default", out=args.out)
    print(Path(files["md"]).read_text())
    print(f"wrote {files['csv']}, {files['md']}, {files['png']}, {files['curve_png']}")
    return 0


def cmd_ui(args: argparse.Namespace, argv: list[str]) -> int:
    from .tracking import default_uri, serve_ui

    return serve_ui(default_uri(args.tracking_uri or "default"), args.port)


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "benchmark": cmd_benchmark, "report": cmd_report, "ui": cmd_ui}


def _trials_failed(err: Exception) -> bool:
    """A :class:`~adalase_tune.experiment.TrialsFailed` (imported only now: the command line loads
    torch after its signal handlers): its one line, and where the report of what finished is."""
    from .experiment import TrialsFailed

    if not isinstance(err, TrialsFailed):
        return False
    files = getattr(err.result, "files", None)
    where = f"; the report of what finished: {files['md']}" if files else ""
    print(f"adalase-tune: error: {err}{where} (--tolerate-failures to exit 0)", file=sys.stderr)
    return True


def _say(text: str) -> None:
    """The last line to stderr; a terminal that closed (SIGHUP) cannot take it, and that must not
    turn an honest exit into a traceback."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    install_for_command()  # before torch and Ray load: a SIGTERM or SIGHUP from here on ends honestly
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, argv)
    except ConfigError as err:  # CheckpointError included
        _say(f"adalase-tune: error: {err}")
        return EXIT_USAGE
    except Interrupted as err:
        _say(f"adalase-tune: {err.message}")
        return err.exit_code
    except KeyboardInterrupt as err:  # before any work that has runs to close
        _say("adalase-tune: interrupted (before any training started)")
        return 128 + getattr(err, "signum", 2)
    except StorageError as err:  # a full disk, a read-only folder: what failed and what is kept, one line
        _say(f"adalase-tune: error: {err}")
        return EXIT_FAILED
    except Exception as err:  # a later failure: one line, unless a developer asks for the traceback
        if _trials_failed(err):
            return EXIT_FAILED
        if type(err).__name__ == "UnreadableImage":  # a file that failed to decode mid-run (its module loads torch)
            _say(f"adalase-tune: error: {err}")  # it says which file, and how to go on
            return EXIT_FAILED
        if os.environ.get("ADALASE_TUNE_DEBUG"):
            raise
        text = " ".join(str(err).split())[:500]
        _say(f"adalase-tune: error: {type(err).__name__}: {text} (set ADALASE_TUNE_DEBUG=1 for the traceback)")
        return EXIT_FAILED


def entry() -> None:
    """The console script. After an interrupt it ends with ``os._exit``: CPython re-raises SIGINT at
    exit (and so hides the exit code) when a KeyboardInterrupt once passed through C code that ran
    Python, as imports of torch and Ray do, even though main() handled it."""
    code = main()
    if code >= 128:
        import signal

        for sig in STOP_SIGNALS:  # a further signal while exiting changes nothing
            signal.signal(sig, signal.SIG_IGN)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP)
                stream.flush()
        if "ray" in sys.modules:
            import ray

            ray.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
