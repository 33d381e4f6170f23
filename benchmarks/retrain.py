"""Search, then retrain: the probe length against accuracy and compute, and the choice of the
default AdaLASE form, on validation figures of the development tasks only.

Development tasks (named in docs/adalase.md): motifs and digits_mlp (one op over the sites) and
motifs_joint (three ops over the sites). On each, over the same seeds (each seed its own training
subset), side by side in one process pool (one torch thread each): every fixed arm (the grid),
`none`, `uniform`, the single-run AdaLASE with train and holdout pseudo-validation, and the
two-phase form (`adalase.retrain`) at probe lengths 0.25, 0.5 and 1.0 of the schedule with either
signal (the retrain running the probe's q as learned: `adalase.sharpen=1`), and the probe of 0.5
with holdout whose retrain runs the probe's q sharpened (`adalase.sharpen` 2, 4 and 8: q to that
power, renormalised). The default is the form with the highest mean paired val difference to the grid's pick
over the development tasks, among the forms whose compute is at most 2x a plain run and at most
half the grid's on every task. Test accuracy is reported beside it and takes no part in the choice.

    python benchmarks/retrain.py                 # 5 seeds, three tasks: about 10 minutes on 2 cores
    python benchmarks/retrain.py --tasks motifs --seeds 3
    python benchmarks/retrain.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from _common import write_result

TASKS = {
    "motifs": "search_spaces/motifs.yaml",
    "digits_mlp": "search_spaces/digits_mlp.yaml",
    "motifs_joint": "search_spaces/motifs_joint.yaml",
}
PROBES = (0.25, 0.5, 1.0)
SIGNALS = ("train", "holdout")
SHARPEN = (2, 4, 8)  # the retrain's q = the probe's q to this power (adalase.sharpen), at probe 0.5, holdout


def forms() -> dict[str, list[str]]:
    """Label -> overrides of every AdaLASE form compared (all with selection.method=adalase)."""
    out = {f"single[{s}]": ["adalase.retrain=false", f"adalase.val_source={s}"] for s in SIGNALS}
    for s in SIGNALS:
        for p in PROBES:
            sets = [f"adalase.val_source={s}", "adalase.retrain=true", f"adalase.probe={p}"]
            out[f"retrain[{s},{p}]"] = [*sets, "adalase.sharpen=1"]
    for k in SHARPEN:
        out[f"retrain[holdout,0.5,^{k}]"] = [*out["retrain[holdout,0.5]"][:-1], f"adalase.sharpen={k}"]
    return out


def one_run(job: tuple) -> dict:
    import torch

    from adalase_tune import Trainer, load_config

    task, path, label, sets, seed, smoke = job[:6]
    torch.set_num_threads(1)
    extra = [*job[6:], f"train.seed={seed}"] + (["train.epochs=2"] if smoke else [])
    s = Trainer(load_config(path, sets + extra, extra_sections=("sweep",))).run()
    row = {
        "task": task,
        "label": label,
        "seed": seed,
        "best_val_acc": s["best_val_acc"],
        "test_acc_at_best_val": s["test_acc_at_best_val"],
        "sample_passes": s["cost"]["sample_passes"],
        "plain_passes": s["config"]["train"]["epochs"] * (s["config"]["data"]["n_train"] or s["splits"]["train"]),
        "arms": s["arms"],
        "splits": s["splits"],
    }
    if s["q_final"] is not None:
        row["top"] = s["arms"][int(np.argmax(s["q_final"]))]
        row["q_top"] = float(np.max(s["q_final"]))
    if s.get("q_retrain") is not None:
        row["q_retrain_top"] = float(np.max(s["q_retrain"]))
    return row


def policies(n_arms: int) -> dict[str, list[str]]:
    out = {"none": ["selection.method=none"], "uniform": ["selection.method=uniform"]}
    out.update({f"fixed({i})": ["selection.method=fixed", f"selection.site={i}"] for i in range(n_arms)})
    out.update({label: ["selection.method=adalase", *sets] for label, sets in forms().items()})
    return out


def n_arms(path: str, sets=()) -> int:
    from adalase_tune import load_config
    from adalase_tune.arms import arm_names
    from adalase_tune.data import build_data
    from adalase_tune.models import build_model
    from adalase_tune.sites import sites_of

    cfg = load_config(path, list(sets), extra_sections=("sweep",))
    data = build_data(cfg.data)
    return len(
        arm_names([s.name for s in sites_of(build_model(cfg.model, data.input_shape, data.num_classes))], cfg.augment)
    )


def grid_pick(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the fixed arm with the best val accuracy (the grid's selection) and its cost."""
    fixed = df[df["label"].str.startswith("fixed")]
    idx = fixed.groupby("seed")["best_val_acc"].idxmax()
    pick = fixed.loc[idx].set_index("seed")
    pick["sample_passes"] = fixed.groupby("seed")["sample_passes"].sum()
    pick["top"] = [pick.loc[s, "arms"][int(pick.loc[s, "label"][6:-1])] for s in pick.index]
    return pick


def ci(diffs) -> str:
    from adalase_tune.report import bootstrap_ci

    d = np.asarray(diffs, dtype=float)
    lo, hi = bootstrap_ci(d)
    return f"{100 * d.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def task_table(task: str, df: pd.DataFrame, path: str = "") -> tuple[list[str], pd.DataFrame]:
    grid = grid_pick(df)
    first = df.iloc[0]
    plain = float(first["plain_passes"])
    target = grid["top"].mode().iloc[0]
    lines = [
        f"## {task}",
        "",
        f"`{path or TASKS[task]}`; splits train {first['splits'].get('train')} (each seed its own subset), val "
        f"{first['splits']['val']}, test {first['splits']['test']}; seeds {sorted(df['seed'].unique().tolist())}. "
        f"Grid: {len(first['arms'])} runs per seed; its pick on val: {', '.join(grid['top'])}.",
        "",
        "| form | val acc (%) | − grid's pick, val [95% CI] | test acc (%) | − grid's pick, test [95% CI] "
        f"| top arm = {target} | × plain run (passes) |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for label in dict.fromkeys(df["label"]):
        if label.startswith("fixed"):
            continue
        g = df[df["label"] == label].set_index("seed").loc[grid.index]
        dv = g["best_val_acc"] - grid["best_val_acc"]
        dt = g["test_acc_at_best_val"] - grid["test_acc_at_best_val"]
        cost = float((g["sample_passes"] / plain).mean())
        found = f"{int((g['top'] == target).sum())}/{len(g)}" if "top" in g and g["top"].notna().all() else "—"
        lines.append(
            f"| {label} | {100 * g['best_val_acc'].mean():.2f} ± {100 * g['best_val_acc'].std(ddof=1):.2f} "
            f"| {ci(dv)} | {100 * g['test_acc_at_best_val'].mean():.2f} ± "
            f"{100 * g['test_acc_at_best_val'].std(ddof=1):.2f} | {ci(dt)} | {found} | {cost:.2f} |"
        )
        summary.append({"task": task, "label": label, "val_diff": dv.mean(), "test_diff": dt.mean(), "cost": cost})
    grid_cost = float((grid["sample_passes"] / plain).mean())
    lines.append(
        f"| grid's pick | {100 * grid['best_val_acc'].mean():.2f} ± {100 * grid['best_val_acc'].std(ddof=1):.2f} | — "
        f"| {100 * grid['test_acc_at_best_val'].mean():.2f} ± {100 * grid['test_acc_at_best_val'].std(ddof=1):.2f} "
        f"| — | {int((grid['top'] == target).sum())}/{len(grid)} | {grid_cost:.2f} |"
    )
    out = pd.DataFrame(summary)
    out["grid_cost"] = grid_cost
    return lines + [""], out


def choose(summary: pd.DataFrame) -> list[str]:
    """The default: best mean val difference to the grid's pick, within the compute budget."""
    adalase = summary[summary["label"].str.startswith(("single", "retrain"))]
    by = adalase.groupby("label", sort=False)
    table = pd.DataFrame(
        {
            "val": by["val_diff"].mean(),
            "test": by["test_diff"].mean(),
            "worst_cost": by["cost"].max(),
            "fits": by.apply(lambda g: bool(((g["cost"] <= 2.0) & (g["cost"] <= g["grid_cost"] / 2 + 1e-9)).all())),
        }
    )
    ok = table[table["fits"]]
    lines = [
        "## The choice of the default (validation only)",
        "",
        "Mean over the development tasks of each form's paired difference to the grid's pick (points); "
        "'fits' = at most 2× a plain run and at most half the grid's compute on every task. The default is "
        "the fitting form with the best val column; the test column is shown, not used.",
        "",
        "| form | val − grid's pick | test − grid's pick | largest × plain run | fits |",
        "|---|---|---|---|---|",
    ]
    for label, r in table.iterrows():
        lines.append(
            f"| {label} | {100 * r['val']:+.2f} | {100 * r['test']:+.2f} | {r['worst_cost']:.2f} | "
            f"{'yes' if r['fits'] else 'no'} |"
        )
    best = ok["val"].idxmax() if len(ok) else None
    lines += ["", f"**Chosen on val: `{best}`.**" if best else "**No form fits the budget.**", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    tasks = [t.strip() for t in args.tasks.split(",")][: 1 if smoke else None]
    seeds = [0, 1] if smoke else list(range(args.seeds))
    jobs = []
    for task in tasks:
        labels = policies(n_arms(TASKS[task]))
        if smoke:
            labels = {
                k: v for k, v in labels.items() if k.startswith("fixed") or k in ("single[train]", "retrain[train,0.5]")
            }
        for seed in seeds:
            jobs += [(task, TASKS[task], label, sets, seed, smoke) for label, sets in labels.items()]
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one_run, jobs))
    df = pd.DataFrame(rows)
    lines = [
        f"{len(rows)} runs, {len(seeds)} seeds, {args.workers} workers, one torch thread each; "
        f"{time.time() - started:.0f} s in all. Accuracies at the epoch of best val accuracy (in the retrain: "
        "among the retrain's epochs), mean ± std (ddof=1) over seeds; differences paired by seed against the "
        "grid's pick (the fixed arm with the best val accuracy in that seed), bootstrap 95% CI over seeds. "
        "Compute in sample passes (the probe's pseudo-validation included) over a plain run's.",
        "",
    ]
    summaries = []
    for task in tasks:
        part, summary = task_table(task, df[df["task"] == task].reset_index(drop=True))
        lines += part
        summaries.append(summary)
    lines += choose(pd.concat(summaries))
    path = write_result(
        "retrain", "Search, then retrain: probe length, signal and the default", "\n".join(lines), smoke
    )
    out = Path(path).with_suffix(".csv")
    df.drop(columns=["arms", "splits"]).to_csv(out, index=False)
    print(f"wrote {out}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
