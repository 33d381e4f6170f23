"""Cost against accuracy: every method (AdaLASE, uniform, none, grid, random, Optuna, ASHA, PBT)
through the `benchmark` command, in the regimes where the site matters, with the committed
configs' seeds and budgets (5 seeds): search_spaces/motifs.yaml (the known-answer task, the
main job) and search_spaces/digits_mlp.yaml (the embedded digits).

    python benchmarks/cost.py                # about 25 minutes on 2 cores
    python benchmarks/cost.py --regimes motifs
    python benchmarks/cost.py --smoke-test
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import RESULTS, write_result

REGIMES = {"motifs": "search_spaces/motifs.yaml", "digits_mlp": "search_spaces/digits_mlp.yaml"}


def main() -> None:
    from adalase_tune.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--methods", help="default: the config's sweep.methods")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    out_root = Path(tempfile.mkdtemp()) if smoke else RESULTS
    storage = tempfile.mkdtemp()
    sections = []
    for regime in args.regimes.split(","):
        config = REGIMES[regime]
        out = out_root / f"cost_{regime}"
        argv = ["benchmark", config, "--out", str(out), "--storage", storage, "--name", f"cost-{regime}", "--no-tracking"]
        if args.methods or smoke:
            argv += ["--methods", "adalase,uniform" if smoke else args.methods]
        if smoke:
            argv += ["--seeds", "1", "--set", "train.epochs=1"]
        assert cli(argv) == 0
        report = (out / "report.md").read_text().split("\n", 1)[1]
        sections.append(f"## {regime}\n\n`adalase-tune {' '.join(a if '/' not in a or a == config else '...' for a in argv)}`"
                        f"\n\n![cost to accuracy](cost_{regime}/cost_to_accuracy.png)\n{report}")
        if smoke:
            break
    print(f"wrote {write_result('cost', 'Cost against accuracy, every method, two regimes', chr(10).join(sections), smoke)}")


if __name__ == "__main__":
    main()
