"""Comparison files from a table of trials: results.csv, report.md, cost_vs_accuracy.png.

Input: one row per trial (see ``adalase_tune.tuning.trial_rows``) with ``method``, ``seed``,
``best_val_acc``, ``test_acc_at_best_val``, ``device_s``, ``sample_passes``, ``finished_at``.
Per method and seed, the configuration is selected on validation accuracy, and its test
accuracy at the epoch of best validation accuracy is reported; never the best test accuracy.
Compute is given in device-seconds and in sample passes, and as a multiple of one plain
training run (``epochs x n_train`` sample passes). No Ray or MLflow here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

WITHIN = 0.005  # "within 0.5 points of the best val acc"


def _per_seed(df: pd.DataFrame, best_val_by_seed: pd.Series) -> pd.DataFrame:
    out = []
    for (method, seed), g in df.groupby(["method", "seed"], sort=False):
        g = g.sort_values("finished_at", kind="stable")
        chosen = g.loc[g["best_val_acc"].idxmax()]
        passes = g["sample_passes"].cumsum().to_numpy()
        running = g["best_val_acc"].cummax().to_numpy()
        reached = np.flatnonzero(running >= best_val_by_seed[seed] - WITHIN)
        out.append({"method": method, "seed": seed, "trials": len(g), "best_val_acc": chosen["best_val_acc"],
                    "test_acc_selected": chosen["test_acc_at_best_val"], "device_s": g["device_s"].sum(),
                    "sample_passes": g["sample_passes"].sum(),
                    "passes_to_within": passes[reached[0]] if len(reached) else np.nan})
    return pd.DataFrame(out)


def plain_run(df: pd.DataFrame, plain_passes: float) -> dict:
    """One plain training run: its sample passes, and its device-seconds where measured
    (the mean of the ``none`` trials, else ``uniform``)."""
    for method in ("none", "uniform"):
        runs = df[(df["method"] == method) & df["device_s"].notna()]
        if len(runs):
            return {"passes": plain_passes, "device_s": float(runs["device_s"].mean()), "from": method}
    return {"passes": plain_passes, "device_s": np.nan, "from": None}


def method_table(trials: pd.DataFrame, plain_passes: float) -> tuple[pd.DataFrame, dict]:
    """One row per method: means and standard deviations over seeds."""
    ok = trials[trials["status"] == "TERMINATED"].dropna(subset=["best_val_acc"])
    best_by_seed = ok.groupby("seed")["best_val_acc"].max()
    seeds = _per_seed(ok, best_by_seed)
    plain = plain_run(ok, plain_passes)
    rows = []
    for method, g in seeds.groupby("method", sort=False):
        rows.append({
            "method": method, "seeds": len(g), "trials": int(g["trials"].sum()),
            "failed": int((trials["method"] == method).sum() - g["trials"].sum()),
            "best_val_acc": g["best_val_acc"].mean(), "best_val_acc_std": g["best_val_acc"].std(ddof=0),
            "test_acc": g["test_acc_selected"].mean(), "test_acc_std": g["test_acc_selected"].std(ddof=0),
            "device_s_per_seed": g["device_s"].mean(), "passes_per_seed": g["sample_passes"].mean(),
            "plain_run_multiple": g["sample_passes"].mean() / plain["passes"],
            "plain_run_multiple_device": g["device_s"].mean() / plain["device_s"],
            # mean over the seeds whose best-so-far came within 0.5 points; how many did is kept
            "to_within_multiple": g["passes_to_within"].mean() / plain["passes"],
            "to_within_seeds": int(g["passes_to_within"].notna().sum()),
        })
    return pd.DataFrame(rows), plain


def _pm(mean, std) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def render_markdown(table: pd.DataFrame, plain: dict, meta: dict) -> str:
    lines = [f"# {meta.get('title', 'AdaLASE against the baselines')}", ""]
    for key, value in meta.items():
        if key != "title":
            lines.append(f"- {key}: {value}")
    lines += [
        f"- plain run: {plain['passes']:.0f} sample passes"
        + (f", {plain['device_s']:.2f} device-s (mean of `{plain['from']}` trials)" if plain["from"] else ""),
        "- accuracies in %, mean ± std over seeds; per seed the configuration is selected on val accuracy and "
        "its test accuracy is taken at the epoch of its best val accuracy",
        "- compute per seed; 'to within 0.5' = compute spent (in plain runs, by sample passes) until the method's "
        "best-so-far val accuracy came within 0.5 points of the best val accuracy any method found for that seed, "
        "averaged over the seeds where it did (their count in brackets when not all)",
        "",
        "| method | seeds | trials | best val acc | test acc (selected on val) | device-s / seed | "
        "sample passes / seed | × plain run (passes) | × plain run (device-s) | to within 0.5 (× plain) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        within = "never" if r.to_within_seeds == 0 else f"{r.to_within_multiple:.2f}" + (
            f" ({r.to_within_seeds}/{r.seeds} seeds)" if r.to_within_seeds < r.seeds else "")
        failed = f" ({r.failed} failed)" if r.failed else ""
        device_multiple = "n/a" if np.isnan(r.plain_run_multiple_device) else f"{r.plain_run_multiple_device:.2f}"
        lines.append(f"| {r.method} | {r.seeds} | {r.trials}{failed} | {_pm(r.best_val_acc, r.best_val_acc_std)} | "
                     f"{_pm(r.test_acc, r.test_acc_std)} | {r.device_s_per_seed:.1f} | {r.passes_per_seed:.0f} | "
                     f"{r.plain_run_multiple:.2f} | {device_multiple} | {within} |")
    if len(table):
        reached = table[table["to_within_seeds"] > 0]
        if len(reached):
            best = reached.assign(order=-reached["to_within_seeds"]).sort_values(["order", "to_within_multiple"]).iloc[0]
            lines += ["", f"Least compute to come within 0.5 points of the best, in the most seeds: **{best['method']}** "
                          f"({best['to_within_multiple']:.2f} plain runs, {best['to_within_seeds']}/{best['seeds']} seeds)."]
    return "\n".join(lines) + "\n"


def plot_cost_vs_accuracy(trials: pd.DataFrame, plain_passes: float, path: Path) -> None:
    """Best-so-far val accuracy against cumulative compute (plain runs), one line per method,
    averaged over seeds trial by trial (trials in order of completion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = trials[trials["status"] == "TERMINATED"].dropna(subset=["best_val_acc"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, g in ok.groupby("method", sort=False):
        curves = []
        for _, s in g.groupby("seed"):
            s = s.sort_values("finished_at", kind="stable")
            curves.append((s["sample_passes"].cumsum().to_numpy() / plain_passes, s["best_val_acc"].cummax().to_numpy()))
        n = min(len(c[0]) for c in curves)
        x = np.mean([c[0][:n] for c in curves], axis=0)
        y = np.mean([c[1][:n] for c in curves], axis=0) * 100
        ax.plot(x, y, marker="o", markersize=3, label=method)
    ax.set_xlabel("cumulative compute (plain training runs, by sample passes)")
    ax.set_ylabel("best-so-far val accuracy (%)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Cost against accuracy (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(trials: pd.DataFrame, out_dir: str | Path, plain_passes: float, meta: Optional[dict] = None) -> dict:
    """Write the three comparison files; returns their paths and the method table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "md": out / "report.md", "png": out / "cost_vs_accuracy.png"}
    trials.to_csv(paths["csv"], index=False)
    table, plain = method_table(trials, plain_passes)
    paths["md"].write_text(render_markdown(table, plain, meta or {}))
    plot_cost_vs_accuracy(trials, plain_passes, paths["png"])
    return {**paths, "table": table}
