"""Does the cheaper `fast` AdaLASE preset (a hypergradient every 10 steps, pseudo-val batch = the
training batch) keep the `faithful` one's accuracy? Test accuracy at the epoch of best val
accuracy, mean ± std over seeds, and the wall-time ratio, side by side in one run.

    python benchmarks/presets.py               # 5 seeds, two regimes
    python benchmarks/presets.py --smoke-test
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from adalase_tune import Trainer, load_config

from _common import write_result

REGIMES = {"transfer, n_train=25": ("search_spaces/digits_transfer.yaml", ["data.n_train=25"]),
           "scratch, n_train=200": ("search_spaces/digits.yaml", ["data.n_train=200"])}
SOURCE = "runs/digits_source.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.smoke_test else list(range(args.seeds))
    if not Path(SOURCE).is_file():
        from adalase_tune.cli import main as cli

        assert cli(["train", "search_spaces/digits_source.yaml", "--save-model", SOURCE, "--quiet", "--no-tracking"]
                   + (["--set", "train.epochs=1"] if args.smoke_test else [])) == 0
    lines = ["| regime | preset | test acc (%) | train+AdaLASE s / run | × faithful time | sample passes / run |",
             "|---|---|---|---|---|---|"]
    for regime, (path, sets) in REGIMES.items():
        extra = sets + ([f"model.checkpoint={SOURCE}"] if "transfer" in regime else [])
        extra += ["train.epochs=1"] if args.smoke_test else []
        stats = {}
        for preset in ("faithful", "fast"):
            accs, secs, passes = [], [], []
            for seed in seeds:
                cfg = load_config(path, extra + ["selection.method=adalase", f"adalase.preset={preset}",
                                                 f"train.seed={seed}"], extra_sections=("sweep",))
                s = Trainer(cfg).run()
                accs.append(100 * s["test_acc_at_best_val"])
                secs.append(s["cost"]["train_s"] + s["cost"]["adalase_s"])
                passes.append(s["cost"]["sample_passes"])
            stats[preset] = (np.mean(accs), np.std(accs), np.mean(secs), np.mean(passes))
        for preset, (m, sd, t, p) in stats.items():
            lines.append(f"| {regime} | {preset} | {m:.2f} ± {sd:.2f} | {t:.1f} | {t / stats['faithful'][2]:.2f} | {p:.0f} |")
    body = f"{len(seeds)} seeds per cell; cnn width 16, mixup, CPU, 1 thread.\n\n" + "\n".join(lines) + "\n"
    print(body)
    print(f"wrote {write_result('presets', 'AdaLASE presets: faithful against fast', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
