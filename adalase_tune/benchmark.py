"""``adalase-tune benchmark``: several methods on the same data, model, epochs and seeds, in one
Ray session, compared by :mod:`adalase_tune.report`."""
from __future__ import annotations

import platform
import sys
import time
from typing import Optional, Sequence

import pandas as pd

from .config import ConfigError, ExperimentConfig
from .report import write_report
from .search import METHODS
from .tuning import SweepOptions, sweep, trial_rows

DEFAULT_METHODS = ("adalase", "uniform", "none", "grid", "random", "optuna", "asha", "pbt")


def parse_methods(text: Optional[str], configured: Optional[Sequence[str]] = None) -> list[str]:
    """``"adalase,grid"`` -> checked list; every name is checked before anything runs."""
    names = [m.strip() for m in text.split(",") if m.strip()] if text else list(configured or DEFAULT_METHODS)
    if not names:
        raise ConfigError("--methods is empty; give e.g. --methods adalase,uniform,grid")
    for name in names:
        METHODS.get(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods = {','.join(names)}: a method is listed twice")
    return names


def plain_passes_of(cfg: ExperimentConfig) -> int:
    """Sample passes of one plain training run: epochs x the training subset's size."""
    from .data import build_data

    return cfg.train.epochs * len(build_data(cfg.data).train)


def run_benchmark(cfg: ExperimentConfig, methods: Sequence[str], options: SweepOptions, out_dir: str,
                  callbacks_for=None, tracker_factory_for=None, on_done=None) -> dict:
    """Run each method with ``options`` and write the comparison files to ``out_dir``.

    ``callbacks_for(method)`` / ``tracker_factory_for(method)`` plug in tracking per method;
    ``on_done(method, rows)`` is called after each method (e.g. to close its parent run).
    """
    from .tuning import prepare

    if options.name is None:
        options = SweepOptions(**{**options.__dict__, "name": f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"})
    sites = None
    for m in methods:  # every method's checks up front, before any trial
        opts = SweepOptions(**{**options.__dict__, "name": f"{options.name}-{m}"})
        sites = prepare(cfg, m, opts, sites)[1]
    plain = plain_passes_of(cfg)
    n_train = plain // cfg.train.epochs
    name = options.name
    rows, started = [], time.time()
    for i, method in enumerate(methods, 1):
        print(f"[{i}/{len(methods)}] {method}: running ({time.time() - started:.0f}s elapsed)", file=sys.stderr, flush=True)
        opts = SweepOptions(**{**options.__dict__, "name": f"{name}-{method}"})
        grids = sweep(cfg, method, opts, callbacks=callbacks_for(method) if callbacks_for else (),
                      tracker_factory=tracker_factory_for(method) if tracker_factory_for else None, sites=sites)
        method_rows = [r for g in grids for r in trial_rows(g, method, sites)]
        rows += method_rows
        done = [r for r in method_rows if r["status"] == "TERMINATED"]
        best = max((r["best_val_acc"] for r in done), default=float("nan"))
        print(f"[{i}/{len(methods)}] {method}: {len(done)}/{len(method_rows)} trials done, best val acc {best:.4f}",
              file=sys.stderr, flush=True)
        if on_done is not None:
            on_done(method, method_rows)
    trials = pd.DataFrame(rows)
    meta = {"title": f"AdaLASE against the baselines: {cfg.model.name} on {cfg.data.name}",
            "data": f"{cfg.data.name}, n_train={n_train}, classes={list(cfg.data.classes) if cfg.data.classes else 'all'}",
            "model": cfg.model.name, "op": cfg.augment.op, "epochs": cfg.train.epochs,
            "seeds": list(options.seeds), "methods": ", ".join(methods),
            "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
            "wall time": f"{time.time() - started:.0f}s"}
    result = write_report(trials, out_dir, plain, meta)
    return {**result, "trials": trials, "sites": sites, "plain_passes": plain}

