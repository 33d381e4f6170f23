"""Cost against accuracy: every method (AdaLASE in its default and one-run forms, uniform, none,
grid, and random, Optuna, ASHA, PBT in their default search space)
through the library's run_benchmark, in the regimes where the site matters, with the committed
configs' seeds and budgets (5 seeds): search_spaces/motifs.yaml (the known-answer task, the main
job) and search_spaces/digits_mlp.yaml (the embedded digits).

    python benchmarks/cost.py                # about 10 minutes on 2 cores
    python benchmarks/cost.py --regimes motifs
    python benchmarks/cost.py --smoke-test
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from adalase_tune import load_config, load_sweep, run_benchmark
from adalase_tune.report import sites_of
from adalase_tune.tuning import SweepOptions

from _common import RESULTS, goals, write_result

REGIMES = {"motifs": "search_spaces/motifs.yaml", "digits_mlp": "search_spaces/digits_mlp.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument(
        "--from-results", action="store_true", help="rebuild cost.md from the committed results/cost_<regime>/ files"
    )
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    out_root = Path(tempfile.mkdtemp()) if smoke else RESULTS
    storage = tempfile.mkdtemp()
    sections = []
    for regime in args.regimes.split(",")[:1] if smoke else args.regimes.split(","):
        path = REGIMES[regime]
        cfg = load_config(path, ["train.epochs=1"] if smoke else [])
        sweep = load_sweep(path)
        methods = ["adalase", "uniform"] if smoke else list(sweep.methods)
        seeds = [0] if smoke else list(sweep.seeds)
        out = out_root / f"cost_{regime}"
        if args.from_results:
            trials = pd.read_csv(out / "results.csv")
        else:
            options = SweepOptions(
                seeds=seeds,
                budgets=sweep.methods,
                max_concurrent=sweep.max_concurrent,
                storage=storage,
                name=f"cost-{regime}",
            )
            trials = run_benchmark(cfg, methods, options, out=str(out), tracking_uri=None).trials
        report = (out / "report.md").read_text().split("\n", 1)[1]
        arms = sites_of(trials)
        verdict = "" if smoke else goals(trials, arms, cfg.train.epochs * (cfg.data.n_train or 0))
        sections.append(
            f"## {regime}\n\n`run_benchmark(load_config({path!r}), {methods}, seeds {seeds})`"
            f"\n\n{verdict}\n![cost to accuracy](cost_{regime}/cost_to_accuracy.png)\n{report}"
        )
    path = write_result("cost", "Cost against accuracy, every method, two regimes", "\n".join(sections), smoke)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
