"""The ``adalase-tune`` command line. Bad input: one readable line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        print(f"adalase-tune: error: {message} (see adalase-tune {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. search_spaces/digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set selection.method=adalase (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adalase-tune", description="Learn where to apply latent data augmentation (AdaLASE).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one network with one selection policy")
    _add_config_args(t)
    t.add_argument("--out", help="write the summary JSON here")
    t.add_argument("--save-model", metavar="PATH", help="save the trained weights for model.checkpoint (transfer)")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="write DIR/last.pt after every epoch")
    t.add_argument("--resume", action="store_true", help="continue from DIR/last.pt of --checkpoint-dir")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    _add_tracking_args(t)
    s = sub.add_parser("sweep", help="run one search method on Ray Tune")
    _add_config_args(s)
    s.add_argument("--method", required=True, help="adalase, uniform, none, grid, random, optuna, asha or pbt")
    s.add_argument("--num-samples", type=int, help="trials per seed for random/optuna/asha, population for pbt")
    _add_ray_args(s, default_seeds=None)
    s.add_argument("--out", metavar="DIR", help="also write results.csv (one row per trial) here")
    _add_tracking_args(s)
    b = sub.add_parser("benchmark", help="compare methods on the same data, model, epochs and seeds")
    _add_config_args(b)
    b.add_argument("--methods", help="comma-separated, default: the YAML's sweep.methods or all")
    _add_ray_args(b, default_seeds=None)
    b.add_argument("--out", metavar="DIR", default="results", help="where results.csv, report.md and the plot go")
    _add_tracking_args(b)
    r = sub.add_parser("report", help="rebuild report.md, results.csv and the plot from MLflow alone")
    r.add_argument("--experiment", required=True, help="MLflow experiment name")
    r.add_argument("--benchmark", help="one benchmark of the experiment (default: the latest)")
    r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    r.add_argument("--out", metavar="DIR", default="report", help="output folder")
    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 and print its URL")
    u.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)")
    u.add_argument("--port", type=int, default=5000)
    return parser


def _add_tracking_args(p):
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db here)")
    p.add_argument("--experiment", help="MLflow experiment name (default: the config file's name)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def _tracking(args):
    """The MLflow handle for this command, or None with --no-tracking."""
    if getattr(args, "no_tracking", False):
        return None
    from .tracking import DEFAULT_URI, Tracking

    return Tracking(args.tracking_uri or DEFAULT_URI, args.experiment or Path(args.config).stem)


def _add_ray_args(p, default_seeds):
    p.add_argument("--seeds", type=int, default=default_seeds, help="number of seeds (0..S-1); default: YAML or 1")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default 0)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--storage", default="runs/ray", help="results and checkpoints: a path (shared on a cluster) or URI")
    p.add_argument("--name", help="experiment name (default: the method, or benchmark-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same --name")
    p.add_argument("--max-failures", type=int, default=2, help="restarts of a failed trial from its checkpoint")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Ray Tune's own output level")


def _sweep_inputs(args):
    """Config, sweep section and options, all checked before Ray starts."""
    from .config import load_config, read_yaml
    from .search import sweep_settings
    from .tuning import SweepOptions

    cfg = load_config(args.config, args.overrides, extra_sections=("sweep",))
    settings = sweep_settings(read_yaml(args.config).get("sweep"))
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds = {args.seeds}: give at least 1")
    seeds = list(range(args.seeds)) if args.seeds is not None else settings.get("seeds", [0])
    pick = lambda flag, key, default: flag if flag is not None else settings.get(key, default)  # noqa: E731
    options = SweepOptions(
        seeds=seeds, num_samples=getattr(args, "num_samples", None), budgets=settings.get("methods", {}),
        max_concurrent=pick(args.max_concurrent, "max_concurrent", None),
        cpus_per_trial=pick(args.cpus_per_trial, "cpus_per_trial", 1.0),
        gpus_per_trial=pick(args.gpus_per_trial, "gpus_per_trial", 0.0), address=args.address,
        storage=args.storage, name=args.name, resume=args.resume, max_failures=args.max_failures, verbose=args.verbose)
    return cfg, settings, options


def cmd_sweep(args) -> int:
    import pandas as pd

    from .search import METHODS
    from .tuning import sweep, trial_rows

    METHODS.get(args.method)
    cfg, _, options = _sweep_inputs(args)
    if args.out:
        _check_writable(str(Path(args.out) / "results.csv"), "--out")
    from .tuning import prepare

    sites = prepare(cfg, args.method, options)[1]  # every check before MLflow or Ray is touched
    tracking = _tracking(args)
    factory, parent = None, None
    if tracking:
        from .tracking import config_hash

        parent = tracking.parent_run(args.method, options.name or args.method, config_hash(cfg), _parent_params(cfg))
        factory = tracking.trial_factory(parent)
    grids = sweep(cfg, args.method, options, tracker_factory=factory, sites=sites)
    rows = pd.DataFrame([r for g in grids for r in trial_rows(g, args.method, sites)])
    if tracking:
        tracking.finish_parent(parent, _method_totals(rows, cfg))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rows.to_csv(Path(args.out) / "results.csv", index=False)
    ok = rows[rows["status"] == "TERMINATED"]
    print(f"{args.method}: {len(ok)}/{len(rows)} trials finished; results in {options.storage}")
    if len(ok):
        best = ok.loc[ok["best_val_acc"].idxmax()]
        print(f"best val/acc {best['best_val_acc']:.4f} (seed {best['seed']}), test/acc there "
              f"{best['test_acc_at_best_val']:.4f}; params {best['params']}")
    return 0 if len(ok) == len(rows) else 1


def cmd_benchmark(args) -> int:
    from .benchmark import parse_methods, run_benchmark
    from .tuning import SweepOptions

    cfg, settings, options = _sweep_inputs(args)
    methods = parse_methods(args.methods, list(settings.get("methods", {})) or None)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = options.name or f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    options = SweepOptions(**{**options.__dict__, "name": name})
    hooks, tracking = {}, None
    if not args.no_tracking:
        from .tracking import config_hash

        parents, params = {}, {}

        def factory_for(method):  # first called after run_benchmark has checked every input
            nonlocal tracking
            if tracking is None:
                tracking = _tracking(args)
                params.update(_parent_params(cfg))
            parents[method] = tracking.parent_run(method, name, config_hash(cfg), params)
            return tracking.trial_factory(parents[method])

        def on_done(method, rows):
            import pandas as pd

            tracking.finish_parent(parents[method], _method_totals(pd.DataFrame(rows), cfg))

        hooks = {"tracker_factory_for": factory_for, "on_done": on_done}
    result = run_benchmark(cfg, methods, options, args.out, **hooks)
    if tracking:
        tracking.summary_run(name, [result["csv"], result["md"], result["png"]],
                             {"plain_passes": result["plain_passes"]})
        print(f"MLflow: experiment {tracking.experiment!r} at {tracking.uri} (adalase-tune ui to browse)")
    print(Path(result["md"]).read_text())
    print(f"wrote {result['csv']}, {result['md']}, {result['png']}")
    return 0


def _parent_params(cfg) -> dict:
    from .benchmark import plain_passes_of

    return {"plain_passes": plain_passes_of(cfg), "epochs": cfg.train.epochs, "data.name": cfg.data.name,
            "data.n_train": cfg.data.n_train, "model.name": cfg.model.name, "augment.op": cfg.augment.op}


def _method_totals(rows, cfg) -> dict:
    """A method's totals for its MLflow parent run."""
    from .benchmark import plain_passes_of
    from .report import method_table

    if not len(rows) or "best_val_acc" not in rows:
        return {}
    table, _ = method_table(rows, plain_passes_of(cfg))
    if not len(table):
        return {}
    t = table.iloc[0]
    return {"cost/total_device_s": float(rows["device_s"].sum()), "cost/total_sample_passes": float(rows["sample_passes"].sum()),
            "cost/plain_run_multiple": t["plain_run_multiple"], "best_val_acc": t["best_val_acc"],
            "test_acc_selected": t["test_acc"], "test_acc_selected_std": t["test_acc_std"]}


def cmd_report(args) -> int:
    import pandas as pd

    from .report import write_report
    from .tracking import DEFAULT_URI, Tracking

    tracking = Tracking(args.tracking_uri or DEFAULT_URI, args.experiment, create=False)
    benchmark = args.benchmark or tracking.latest_benchmark()
    if benchmark is None:
        raise ConfigError(f"--experiment {args.experiment!r}: no benchmark or sweep runs found at {tracking.uri}")
    rows = pd.DataFrame(tracking.trial_rows(benchmark))
    meta = tracking.benchmark_meta(benchmark)
    if not len(rows) or "plain_passes" not in meta:
        raise ConfigError(f"--benchmark {benchmark!r}: no finished trial runs in experiment {args.experiment!r}")
    result = write_report(rows, args.out, float(meta["plain_passes"]),
                          {"title": f"{args.experiment}: {benchmark} (rebuilt from MLflow)", "tracking": tracking.uri})
    print(Path(result["md"]).read_text())
    print(f"wrote {result['csv']}, {result['md']}, {result['png']}")
    return 0


def cmd_ui(args) -> int:
    import subprocess

    from .tracking import DEFAULT_URI, check_tracking_uri

    uri = check_tracking_uri(args.tracking_uri or DEFAULT_URI)
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    return subprocess.call(cmd)


def cmd_train(args) -> int:
    from .checkpoint import atomic_save, safe_load
    from .config import load_config
    from .engine import Trainer
    from .models import save_model

    cfg = load_config(args.config, args.overrides, extra_sections=("sweep",))
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir DIR (the folder holding last.pt)")
    ckpt = Path(args.checkpoint_dir) / "last.pt" if args.checkpoint_dir else None
    if args.out:
        _check_writable(args.out, "--out")
    if args.save_model:
        _check_writable(args.save_model, "--save-model")
    trainer = Trainer(cfg, progress=not args.quiet)  # every check of the input happens here
    tracking = _tracking(args)
    tracker = tracking.standalone_run(cfg, [s.name for s in trainer.sites]) if tracking else None

    def report(metrics, state):
        if ckpt:
            atomic_save(state, ckpt)
        if tracker:
            tracker.log_epoch(metrics)

    trainer.report = report
    if args.resume and ckpt.is_file():
        trainer.load_state_dict(safe_load(ckpt), source=str(ckpt))
        print(f"resuming {ckpt} after epoch {trainer.epoch}", file=sys.stderr)
    if not args.quiet:
        sites = ", ".join(f"{i}:{s.name}{list(s.shape)}" for i, s in enumerate(trainer.sites))
        print(f"{cfg.model.name} on {cfg.data.name} (n_train={len(trainer.data.train)}), "
              f"{cfg.selection.method}, op {cfg.augment.op}, device {trainer.device}; sites {sites}", file=sys.stderr)
    try:
        summary = trainer.run()
    except Exception as err:
        if tracker:
            tracker.fail(err)
        raise
    if tracker:
        tracker.finish(summary)
    if args.save_model:
        save_model(trainer.model, args.save_model, cfg.to_dict())
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"best val/acc {summary['best_val_acc']:.4f} (epoch {summary['best_epoch']}), "
          f"test/acc there {summary['test_acc_at_best_val']:.4f}, final test/acc {summary['final_test_acc']:.4f}"
          + (f"; q {['%.3f' % v for v in summary['q_final']]}" if summary["q_final"] else ""))
    return 0


def _check_writable(path: str, flag: str) -> None:
    """Create the parent folder of an output file now, so a bad path fails before training."""
    parent = Path(path).resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot create folder {parent} ({err.strerror}); choose another path") from None


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "benchmark": cmd_benchmark, "report": cmd_report,
            "ui": cmd_ui}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError) as err:
        print(f"adalase-tune: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("adalase-tune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
