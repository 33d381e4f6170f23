"""Cost against accuracy on digits in three regimes, all methods, several seeds, through the
`benchmark` command and the committed configs:

- scratch: search_spaces/digits.yaml (all training samples, 10 classes);
- transfer, few samples: search_spaces/digits_transfer.yaml (pre-trained on 0-4, 50 samples of 5-9);
- transfer, all samples: the same with data.n_train=null.

    python benchmarks/cost.py                # 3 seeds, all methods (about half an hour on 2 cores)
    python benchmarks/cost.py --smoke-test
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import RESULTS, write_result

REGIMES = {
    "scratch": ("search_spaces/digits.yaml", []),
    "transfer_few": ("search_spaces/digits_transfer.yaml", []),
    "transfer_all": ("search_spaces/digits_transfer.yaml", ["data.n_train=null"]),
}
SOURCE = "runs/digits_source.pt"


def main() -> None:
    from adalase_tune.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="adalase,uniform,none,grid,random,optuna,asha,pbt")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    if not Path(SOURCE).is_file() or smoke:
        source = SOURCE if not smoke else str(Path(tempfile.mkdtemp()) / "source.pt")
        assert cli(["train", "search_spaces/digits_source.yaml", "--save-model", source, "--quiet", "--no-tracking"]
                   + (["--set", "train.epochs=1"] if smoke else [])) == 0
    else:
        source = SOURCE
    out_root = Path(tempfile.mkdtemp()) if smoke else RESULTS
    storage = tempfile.mkdtemp()
    sections = []
    for regime, (config, sets) in REGIMES.items():
        if smoke and regime != "transfer_few":
            continue
        sets = sets + (["train.epochs=1", "data.n_train=20"] if smoke else [])
        if "transfer" in regime:
            sets = sets + [f"model.checkpoint={source}"]
        out = out_root / f"cost_{regime}"
        argv = ["benchmark", config, "--methods", "adalase,uniform" if smoke else args.methods,
                "--seeds", "1" if smoke else str(args.seeds), "--out", str(out), "--storage", storage,
                "--name", f"cost-{regime}", "--no-tracking"]
        for s in sets:
            argv += ["--set", s]
        assert cli(argv) == 0
        report = (out / "report.md").read_text().split("\n", 1)[1]
        sections.append(f"## {regime}\n\n`adalase-tune {' '.join(argv)}`\n\n![cost vs accuracy](cost_{regime}/cost_vs_accuracy.png)\n{report}")
    print(f"wrote {write_result('cost', 'Cost against accuracy on digits, three regimes', chr(10).join(sections), smoke)}")


if __name__ == "__main__":
    main()
