"""Cost against accuracy: every method (AdaLASE, uniform, none, grid, random, Optuna, ASHA, PBT)
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

from adalase_tune import load_config, load_sweep, run_benchmark
from adalase_tune.tuning import SweepOptions

from _common import RESULTS, write_result

REGIMES = {"motifs": "search_spaces/motifs.yaml", "digits_mlp": "search_spaces/digits_mlp.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--regimes", default=",".join(REGIMES))
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
        options = SweepOptions(
            seeds=[0] if smoke else list(sweep.seeds),
            budgets=sweep.methods,
            max_concurrent=sweep.max_concurrent,
            storage=storage,
            name=f"cost-{regime}",
        )
        result = run_benchmark(cfg, methods, options, out=str(out_root / f"cost_{regime}"), tracking_uri=None)
        report = result.files["md"].read_text().split("\n", 1)[1]
        sections.append(
            f"## {regime}\n\n`run_benchmark(load_config({path!r}), {methods}, seeds {list(options.seeds)})`"
            f"\n\n![cost to accuracy](cost_{regime}/cost_to_accuracy.png)\n{report}"
        )
    path = write_result("cost", "Cost against accuracy, every method, two regimes", "\n".join(sections), smoke)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
