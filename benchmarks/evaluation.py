"""The default AdaLASE on evaluation tasks: tasks on which no default or form was chosen.

The default (`selection.method=adalase` with no other setting: the form that
`benchmarks/retrain.py` chose on the development tasks' validation figures) and, beside it, the
previous default (the same, with the retrain's q not sharpened: `adalase.sharpen=1`) and the
paper's single-run form with train pseudo-validation, against `none`, `uniform`
and every fixed arm (the grid), over the same seeds (each seed its own training subset), side by
side in one process pool. The tasks:

- `motifs_hidden`: a known answer at a hidden layer (search_spaces/motifs_hidden.yaml): the
  motifs signal in a fixed scrambled order, an MLP whose first layer is written to undo it
  (adalase_tune.known_answer); translate helps at hidden1 only, by construction. Here every
  method, the black-box searches included, also runs through run_benchmark on a local Ray;
- `motifs_cutout`: no site is expected to help (search_spaces/motifs_cutout.yaml);
- `transfer_25` / `transfer_350`: the paper's sample-size effect on real data: a CNN pretrained
  on digits 0-4 (written here first, search_spaces/digits_source.yaml), fine-tuned with mixup on
  digits 5-9 with 25 or 350 training samples (search_spaces/digits_transfer.yaml; val 251, test 269).

Per task: which arm the grid picks, whether AdaLASE's q follows it, and the paired differences
against `none`, `uniform` and the grid's pick; the goal is to be at most 1 point below the best of
the three (paired mean). Whatever it shows is committed.

    python benchmarks/evaluation.py               # 5 seeds: about 10 minutes on 2 cores
    python benchmarks/evaluation.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from adalase_tune.known_answer import write_unscrambler

from _common import RESULTS, goals, write_result
from retrain import ci, grid_pick, n_arms, one_run

TRANSFER = "search_spaces/digits_transfer.yaml"
FORMS = {
    "adalase": ["selection.method=adalase"],  # the package default, as a user gets it
    "adalase[sharpen=1]": ["selection.method=adalase", "adalase.sharpen=1"],  # the previous default
    "adalase[single,train]": [
        "selection.method=adalase",
        "adalase.retrain=false",
        "adalase.val_source=train",
    ],
}


HIDDEN = "search_spaces/motifs_hidden.yaml"


def tasks(checkpoint: str, unscrambler: str) -> dict[str, tuple[str, list[str]]]:
    transfer = [f"model.checkpoint={checkpoint}", "data.val_fraction=0.4"]
    return {
        "motifs_hidden": (HIDDEN, [f"model.checkpoint={unscrambler}"]),
        "motifs_cutout": ("search_spaces/motifs_cutout.yaml", []),
        "transfer_25": (TRANSFER, [*transfer, "data.n_train=25"]),
        "transfer_350": (TRANSFER, [*transfer, "data.n_train=350"]),
    }


def pretrain(path: Path, smoke: bool) -> str:
    """The source network of the transfer tasks: digits 0-4, all their training samples."""
    from adalase_tune import Trainer, load_config
    from adalase_tune.models import save_model

    cfg = load_config("search_spaces/digits_source.yaml", ["train.epochs=1"] if smoke else [])
    trainer = Trainer(cfg)
    summary = trainer.run()
    save_model(trainer.model, str(path), cfg.to_dict())
    print(f"source network: val acc {summary['best_val_acc']:.4f} on digits 0-4, saved to {path}", flush=True)
    return str(path)


def verdict(task: str, path: str, df: pd.DataFrame) -> list[str]:
    grid = grid_pick(df)
    first = df.iloc[0]
    arms = list(first["arms"])
    fixed = df[df["label"].str.startswith("fixed")]
    per_arm = fixed.groupby("label")[["best_val_acc", "test_acc_at_best_val"]].agg(["mean", "std"])
    tmp = re.escape(str(Path(tempfile.gettempdir())))
    sets = re.sub(tmp + r"/[^/ ]+", "<tmp>", " ".join(first["sets"]))  # no temp folder names
    lines = [
        f"## {task}",
        "",
        f"`{path}` {sets}; splits train {first['splits']['train']} (each seed its own "
        f"subset), val {first['splits']['val']}, test {first['splits']['test']}; seeds "
        f"{sorted(df['seed'].unique().tolist())}.",
        "",
        "The grid, per arm (val / test, %): "
        + "; ".join(
            f"{arms[int(label[6:-1])]} {100 * r[('best_val_acc', 'mean')]:.2f} / "
            f"{100 * r[('test_acc_at_best_val', 'mean')]:.2f}"
            for label, r in per_arm.iterrows()
        )
        + f". Its pick on val per seed: {', '.join(grid['top'])}.",
        "",
        "| policy | test acc (%) | − none | − uniform | − grid's pick | − best of the three | top arm per seed "
        "| × plain run (passes) | goal (≥ −1 point) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plain = float(first["plain_passes"])
    refs = {
        "none": df[df["label"] == "none"].set_index("seed")["test_acc_at_best_val"],
        "uniform": df[df["label"] == "uniform"].set_index("seed")["test_acc_at_best_val"],
        "grid": grid["test_acc_at_best_val"],
    }
    best_ref = max(refs, key=lambda k: refs[k].mean())
    for label in [*FORMS, "uniform", "none"]:
        g = df[df["label"] == label].set_index("seed").loc[grid.index]
        acc = g["test_acc_at_best_val"]
        cells = [ci(acc - refs[r]) if r != label else "—" for r in refs]
        gap = (acc - refs[best_ref]).mean()
        tops = ", ".join(g["top"]) if "top" in g and g["top"].notna().all() else "—"
        goal = ("meets" if gap >= -0.01 else "**misses**") if label in FORMS else ""
        lines.append(
            f"| {label} | {100 * acc.mean():.2f} ± {100 * acc.std(ddof=1):.2f} | {' | '.join(cells)} | "
            f"{100 * gap:+.2f} (vs {best_ref}) | {tops} | {(g['sample_passes'] / plain).mean():.2f} | {goal} |"
        )
    lines.append(
        f"| grid's pick | {100 * grid['test_acc_at_best_val'].mean():.2f} ± "
        f"{100 * grid['test_acc_at_best_val'].std(ddof=1):.2f} | {ci(grid['test_acc_at_best_val'] - refs['none'])} "
        f"| {ci(grid['test_acc_at_best_val'] - refs['uniform'])} | — | — | {', '.join(grid['top'])} | "
        f"{(grid['sample_passes'] / plain).mean():.2f} | |"
    )
    return lines + [""]


def against_searches(sets: list[str]) -> str:
    """The known answer at a hidden layer, every method of its YAML through run_benchmark on a
    local Ray (the searches in their default space), and the four goals (_common.goals)."""
    from adalase_tune import load_config, load_sweep, run_benchmark
    from adalase_tune.tuning import SweepOptions

    cfg, sweep = load_config(HIDDEN, sets), load_sweep(HIDDEN)
    options = SweepOptions(
        seeds=list(sweep.seeds),
        budgets=sweep.methods,
        max_concurrent=sweep.max_concurrent,
        storage=tempfile.mkdtemp(),
        name="evaluation-motifs-hidden",
    )
    out = RESULTS / "motifs_hidden"
    result = run_benchmark(cfg, list(sweep.methods), options, out=str(out), tracking_uri=None)
    table = result.table.set_index("method")
    rows = [
        f"| {m} | {100 * r['test_acc']:.2f} ± {100 * r['test_acc_std']:.2f} | {r['plain_run_multiple']:.2f} |"
        for m, r in table.iterrows()
    ]
    return "\n".join(
        [
            f"Every method on `motifs_hidden` through `run_benchmark` ({list(sweep.methods)}, the searches in the "
            f"arm space; full report: [motifs_hidden/report.md](motifs_hidden/report.md)):",
            "",
            "| method | test acc (%) | × plain run (passes) |",
            "|---|---|---|",
            *rows,
            "",
            goals(result.trials, result.sites, result.plain_passes),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    seeds = [0, 1] if smoke else list(range(args.seeds))
    started = time.time()
    with tempfile.TemporaryDirectory() as d:
        checkpoint = pretrain(Path(d) / "digits_source.pt", smoke)
        unscrambler = write_unscrambler(Path(d) / "unscrambler.pt")
        chosen = tasks(checkpoint, unscrambler)
        if smoke:
            chosen = {"transfer_25": chosen["transfer_25"]}
        jobs = []
        for task, (path, sets) in chosen.items():
            k = n_arms(path, sets)
            labels = {"none": ["selection.method=none"], "uniform": ["selection.method=uniform"], **FORMS}
            labels.update({f"fixed({i})": ["selection.method=fixed", f"selection.site={i}"] for i in range(k)})
            for seed in seeds:
                jobs += [(task, path, label, form, seed, smoke, *sets) for label, form in labels.items()]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            rows = list(pool.map(one_run, jobs))
        searches = "" if smoke else against_searches(chosen["motifs_hidden"][1])
    df = pd.DataFrame(rows)
    df["sets"] = [list(chosen[t][1]) for t in df["task"]]
    lines = [
        f"{len(rows)} runs, {len(seeds)} seeds, {args.workers} workers, one torch thread each; "
        f"{time.time() - started:.0f} s in all (the source network included). Test accuracy at the epoch "
        "of best val accuracy, mean ± std (ddof=1) over seeds; differences paired by seed, in points, with "
        "bootstrap 95% CIs over seeds. No setting of the package was chosen on these tasks.",
        "",
    ]
    for task, (path, _) in chosen.items():
        lines += verdict(task, path, df[df["task"] == task].reset_index(drop=True))
        if task == "motifs_hidden" and searches:
            lines += [searches]
    path = write_result("evaluation", "The default AdaLASE on evaluation tasks", "\n".join(lines), smoke)
    out = Path(path).with_suffix(".csv")
    df.drop(columns=["arms", "splits", "sets"]).to_csv(out, index=False)
    print(f"wrote {out}")
    print(f"wrote {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
