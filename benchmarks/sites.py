"""The paper's layer study on digits: fixed(i) for every site, uniform, adalase and none, over
n_train in {small, medium, all}, from scratch and in transfer (pre-trained on 0-4, fine-tuned on
5-9). Test accuracy at the epoch of best val accuracy, mean ± std over seeds; AdaLASE's final q.

    python benchmarks/sites.py               # 3 seeds, about 20 minutes on 2 CPU cores
    python benchmarks/sites.py --smoke-test
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from _common import RESULTS, write_result

REGIMES = {"scratch": ("search_spaces/digits.yaml", [50, 200, None]),
           "transfer": ("search_spaces/digits_transfer.yaml", [25, 100, None])}
SOURCE = "runs/digits_source.pt"


def policies(n_sites: int) -> list[tuple[str, list[str]]]:
    out = [("none", ["selection.method=none"]), ("uniform", ["selection.method=uniform"]),
           ("adalase", ["selection.method=adalase"])]
    return out + [(f"fixed({i})", ["selection.method=fixed", f"selection.site={i}"]) for i in range(n_sites)]


def one_run(job: tuple) -> dict:
    import torch

    from adalase_tune import Trainer, load_config

    regime, path, n_train, label, sets, seed, smoke = job
    torch.set_num_threads(1)
    extra = [f"data.n_train={'null' if n_train is None else n_train}", f"train.seed={seed}"]
    if regime == "transfer":
        extra.append(f"model.checkpoint={SOURCE}")
    if smoke:
        extra.append("train.epochs=1")
    s = Trainer(load_config(path, sets + extra, extra_sections=("sweep",))).run()
    return {"regime": regime, "n_train": n_train or "all", "policy": label, "seed": seed,
            "test_acc": s["test_acc_at_best_val"], "q_final": s["q_final"], "sites": s["sites"]}


def ensure_source(smoke: bool) -> None:
    from adalase_tune.cli import main

    if not Path(SOURCE).is_file():
        args = ["train", "search_spaces/digits_source.yaml", "--save-model", SOURCE, "--quiet", "--no-tracking"]
        assert main(args + (["--set", "train.epochs=1"] if smoke else [])) == 0


def verdict(rows: list[dict], sites: list[str]) -> str:
    def mean(regime, n, policy):
        return np.mean([r["test_acc"] for r in rows if (r["regime"], r["n_train"], r["policy"]) == (regime, n, policy)])

    sizes = sorted({r["n_train"] for r in rows if r["regime"] == "transfer"}, key=lambda v: (v == "all", v))
    small, large = sizes[0], sizes[-1]
    fixed = [f"fixed({i})" for i in range(len(sites))]
    last = fixed[-1]
    at_small = sorted(fixed, key=lambda p: -mean("transfer", small, p))
    at_large = sorted(fixed, key=lambda p: mean("transfer", large, p))
    best_small = at_small[0] == last
    worst_large = at_large[0] == last
    return (f"- Transfer, n_train={small}: the site nearest the output ({last}, {sites[-1]}) is "
            f"{'the best' if best_small else f'not the best (best: {at_small[0]})'} of the fixed sites "
            f"({100 * mean('transfer', small, last):.2f}% vs best {100 * mean('transfer', small, at_small[0]):.2f}%).\n"
            f"- Transfer, n_train={large}: {last} is {'the worst' if worst_large else f'not the worst (worst: {at_large[0]})'} "
            f"of the fixed sites ({100 * mean('transfer', large, last):.2f}% vs worst "
            f"{100 * mean('transfer', large, at_large[0]):.2f}%).\n"
            f"- So the paper's finding {'holds' if best_small and worst_large else 'does not hold'} here"
            f"{'' if best_small and worst_large else ' as stated'}; differences smaller than the seed spread "
            "(the ± columns) are not evidence either way.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    ensure_source(smoke)
    seeds = [0] if smoke else list(range(args.seeds))
    n_sites = 5
    jobs = []
    for regime, (path, sizes) in REGIMES.items():
        for n in (sizes[:1] if smoke else sizes):
            for label, sets in (policies(n_sites)[:3] if smoke else policies(n_sites)):
                jobs += [(regime, path, n, label, sets, s, smoke) for s in seeds]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one_run, jobs))
    sites = rows[0]["sites"]
    lines = [f"Model: cnn (width 16); op mixup; {len(seeds)} seeds; test accuracy (%) at the epoch of best val "
             "accuracy, mean ± std over seeds. Sites: " + ", ".join(f"{i}={s}" for i, s in enumerate(sites)), ""]
    for regime in REGIMES:
        sizes = [n for n in dict.fromkeys(r["n_train"] for r in rows if r["regime"] == regime)]
        labels = list(dict.fromkeys(r["policy"] for r in rows))
        lines += [f"## {regime}", "", "| policy | " + " | ".join(f"n_train={n}" for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for label in labels:
            cells = []
            for n in sizes:
                accs = [100 * r["test_acc"] for r in rows if (r["regime"], r["n_train"], r["policy"]) == (regime, n, label)]
                cells.append(f"{np.mean(accs):.2f} ± {np.std(accs):.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "AdaLASE's final q (mean over seeds):", ""]
        for n in sizes:
            qs = np.mean([r["q_final"] for r in rows if (r["regime"], r["n_train"], r["policy"]) == (regime, n, "adalase")], 0)
            lines.append(f"- n_train={n}: " + ", ".join(f"{s} {q:.3f}" for s, q in zip(sites, qs)))
        lines.append("")
    if not smoke:
        lines += ["## Does the paper's finding hold here?", "", verdict(rows, sites)]
        (RESULTS / "sites_runs.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {write_result('sites', 'Layer study: which site, by regime and sample size', chr(10).join(lines), smoke)}")


if __name__ == "__main__":
    main()
