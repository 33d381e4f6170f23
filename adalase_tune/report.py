"""Comparison files from a table of trials: results.csv, report.md and two plots.

Input: one row per trial (see ``adalase_tune.tracking.trials.trial_rows``) with ``method``, ``seed``,
``best_val_acc``, ``test_acc_at_best_val``, ``device_s``, ``sample_passes``, ``finished_at``, and
per site ``q/<site>`` (AdaLASE's final q) or ``da_prob/<site>`` (the weights a trial ran with); in a
joint setting per (site, op) pair, ``q/<site>/<op>`` and ``da_prob/<site>/<op>``.
Per method and seed, the configuration is selected on validation accuracy, and its test
accuracy at the epoch of best validation accuracy is reported; never the best test accuracy.
Compute is given in device-seconds and in sample passes, and as a multiple of one plain
training run (``epochs x n_train`` sample passes). Differences between methods are paired by
seed, with a bootstrap 95% confidence interval. No Ray or MLflow here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import keys
from .arms import as_grid, joint_layout
from .checkpoint import atomic_write, figure_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

WITHIN = 0.005  # "within 0.5 points of the best val acc"
BOOTSTRAP = 10000


def sites_of(trials: pd.DataFrame) -> list[str]:
    """The site names, from the ``q/<site>`` or ``da_prob/<site>`` columns, in column order."""
    names = [c.split("/", 1)[1] for c in trials.columns if c.startswith(keys.ARM_COLUMNS)]
    return list(dict.fromkeys(names))


def selected(g: pd.DataFrame) -> pd.Series:
    """The configuration a method selects among its trials of one seed: the best val accuracy; a tie
    goes to the lowest trial id, so that the live report and one rebuilt from MLflow (whose finish
    times differ in precision) select the same trial."""
    if "trial_id" in g:
        return g.sort_values(["best_val_acc", "trial_id"], ascending=[False, True], kind="stable").iloc[0]
    return g.loc[g["best_val_acc"].idxmax()]


def _per_seed(df: pd.DataFrame, best_val_by_seed: pd.Series) -> pd.DataFrame:
    out = []
    for (method, seed), g in df.groupby(["method", "seed"], sort=False):
        g = g.sort_values("finished_at", kind="stable")
        chosen = selected(g)
        passes = g["sample_passes"].cumsum().to_numpy()
        running = g["best_val_acc"].cummax().to_numpy()
        reached = np.flatnonzero(running >= best_val_by_seed[seed] - WITHIN)
        out.append(
            {
                "method": method,
                "seed": seed,
                "trials": len(g),
                "best_val_acc": chosen["best_val_acc"],
                "test_acc_selected": chosen["test_acc_at_best_val"],
                "device_s": g["device_s"].sum(),
                "sample_passes": g["sample_passes"].sum(),
                "passes_to_within": passes[reached[0]] if len(reached) else np.nan,
            }
        )
    return pd.DataFrame(out)


def plain_run(df: pd.DataFrame, plain_passes: float) -> dict:
    """One plain training run: its sample passes, and its device-seconds where measured
    (the mean of the ``none`` trials, else ``uniform``)."""
    for method in ("none", "uniform"):
        runs = df[(df["method"] == method) & df["device_s"].notna()]
        if len(runs):
            return {"passes": plain_passes, "device_s": float(runs["device_s"].mean()), "from": method}
    return {"passes": plain_passes, "device_s": np.nan, "from": None}


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    if not len(trials) or "best_val_acc" not in trials:
        return trials.iloc[0:0]
    return trials[trials["status"] == "TERMINATED"].dropna(subset=["best_val_acc"])


def per_seed_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed): the val-selected configuration's accuracies and the compute."""
    ok = finished(trials)
    if not len(ok):
        return pd.DataFrame(
            columns=[
                "method",
                "seed",
                "trials",
                "best_val_acc",
                "test_acc_selected",
                "device_s",
                "sample_passes",
                "passes_to_within",
            ]
        )
    return _per_seed(ok, ok.groupby("seed")["best_val_acc"].max())


def method_table(trials: pd.DataFrame, plain_passes: float) -> tuple[pd.DataFrame, dict]:
    """One row per method: means and standard deviations (ddof=1) over seeds."""
    ok = finished(trials)
    seeds = per_seed_table(trials)
    plain = plain_run(ok, plain_passes) if len(ok) else {"passes": plain_passes, "device_s": np.nan, "from": None}
    rows = []
    for method, g in seeds.groupby("method", sort=False):
        rows.append(
            {
                "method": method,
                "seeds": len(g),
                "trials": int(g["trials"].sum()),
                "failed": int((trials["method"] == method).sum() - g["trials"].sum()),
                "best_val_acc": g["best_val_acc"].mean(),
                "best_val_acc_std": _std(g["best_val_acc"]),
                "test_acc": g["test_acc_selected"].mean(),
                "test_acc_std": _std(g["test_acc_selected"]),
                "device_s_per_seed": g["device_s"].mean(),
                "passes_per_seed": g["sample_passes"].mean(),
                "plain_run_multiple": g["sample_passes"].mean() / plain["passes"],
                "plain_run_multiple_device": g["device_s"].mean() / plain["device_s"],
                # mean over the seeds whose best-so-far came within 0.5 points; how many did is kept
                "to_within_multiple": g["passes_to_within"].mean() / plain["passes"],
                "to_within_seeds": int(g["passes_to_within"].notna().sum()),
            }
        )
    return pd.DataFrame(rows), plain


def _std(values: npt.ArrayLike) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def bootstrap_ci(diffs: Sequence[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (resampling seeds)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (BOOTSTRAP, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_differences(trials: pd.DataFrame, against: Sequence[str] = ("uniform", "none", "grid")) -> pd.DataFrame:
    """Per method and reference: the mean over shared seeds of (method - reference) selected test
    accuracy, with a bootstrap 95% CI over seeds."""
    seeds = per_seed_table(trials)
    acc = seeds.pivot_table(index="seed", columns="method", values="test_acc_selected")
    rows = []
    for ref in against:
        if ref not in acc:
            continue
        for method in dict.fromkeys(seeds["method"]):
            if method == ref:
                continue
            pair = acc[[method, ref]].dropna()
            diffs = (pair[method] - pair[ref]).to_numpy()
            lo, hi = bootstrap_ci(diffs)
            rows.append(
                {
                    "method": method,
                    "against": ref,
                    "seeds": len(diffs),
                    "mean_diff": diffs.mean() if len(diffs) else np.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(rows)


def grid_by_site(trials: pd.DataFrame, sites: Sequence[str]) -> pd.DataFrame:
    """The grid's per-site accuracies (mean and std over seeds), from its one-hot ``da_prob`` rows."""
    ok = finished(trials)
    grid = ok[ok["method"] == "grid"]
    cols = [keys.da_prob(s) for s in sites]
    if not len(grid) or not all(c in grid for c in cols):
        return pd.DataFrame()
    site_of = grid[cols].to_numpy(dtype=float).argmax(1)
    g = grid.assign(site=[sites[i] for i in site_of])
    out = g.groupby("site").agg(
        val=("best_val_acc", "mean"),
        val_std=("best_val_acc", _std),
        test=("test_acc_at_best_val", "mean"),
        test_std=("test_acc_at_best_val", _std),
        seeds=("seed", "nunique"),
    )
    return out.reindex([s for s in sites if s in out.index])


def site_agreement(trials: pd.DataFrame, sites: Sequence[str]) -> Optional[dict]:
    """How well AdaLASE's final q agrees with the grid, per seed of each AdaLASE method.

    The grid's best site is chosen on validation accuracy (mean over seeds); AdaLASE agrees in a
    seed when the argmax of its q_final is that site, or a site whose mean val accuracy is within
    one seed std (pooled over the grid's sites) of it. Also: Spearman's rank correlation between
    q_final and the grid's per-site mean val accuracy, averaged over seeds.
    """
    grid = grid_by_site(trials, sites)
    ok = finished(trials)
    qcols = [keys.q_column(s) for s in sites]
    if grid.empty or not all(c in ok for c in qcols) or len(grid) != len(sites):
        return None
    pooled = float(np.sqrt(np.nanmean(np.square(grid["val_std"].to_numpy()))))
    best = grid["val"].idxmax()
    ties = set(grid.index[grid["val"] >= grid.loc[best, "val"] - pooled])
    out = {"best_site": best, "tied": sorted(ties - {best}), "pooled_std": pooled, "methods": {}}
    from scipy.stats import spearmanr

    for method, g in ok.dropna(subset=qcols).groupby("method", sort=False):
        q = g[qcols].to_numpy(dtype=float)
        argmax = [sites[i] for i in q.argmax(1)]
        rhos = [spearmanr(row, grid["val"].to_numpy()).statistic for row in q]
        out["methods"][method] = {
            "seeds": len(q),
            "agree": sum(a in ties for a in argmax),
            "argmax": argmax,
            "rho": float(np.nanmean(rhos)),
            "q_mean": q.mean(0),
            "q_std": q.std(0, ddof=1) if len(q) > 1 else q.std(0),
        }
    return out


def top_arms(trials: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """Per method and seed, the arm that its val-selected configuration weights most: the argmax
    of AdaLASE's q_final, the grid's fixed arm, the largest searched weight. Configurations that
    weight every arm alike (``uniform``, ``none``) have no top arm and are left out."""
    ok = finished(trials)
    rows = []
    for (method, seed), g in ok.groupby(["method", "seed"], sort=False):
        chosen = selected(g)
        for prefix in keys.ARM_COLUMNS:
            cols = [f"{prefix}{a}" for a in arms]
            if not all(c in chosen.index for c in cols):
                continue
            w = pd.to_numeric(chosen[cols], errors="coerce").to_numpy(dtype=float)
            if np.isnan(w).any() or w.sum() <= 0 or np.allclose(w, w[0]):
                continue
            q = w / w.sum()
            rows.append({"method": method, "seed": seed, "top": arms[int(q.argmax())], "share": float(q.max()), "q": q})
            break
    return pd.DataFrame(rows)


def arm_finding(trials: pd.DataFrame, arms: Sequence[str], table: pd.DataFrame, target: str) -> list[dict]:
    """Per method: in how many seeds its selected configuration weights ``target`` most, the mean
    weight share it gives ``target``, and its compute in plain runs."""
    tops = top_arms(trials, arms)
    if tops.empty:
        return []
    index = list(arms).index(target)
    out = []
    for method, g in tops.groupby("method", sort=False):
        cost = table.loc[table["method"] == method, "plain_run_multiple"]
        out.append(
            {
                "method": method,
                "seeds": len(g),
                "found": int((g["top"] == target).sum()),
                "share": float(np.mean([q[index] for q in g["q"]])),
                "tops": list(g["top"]),
                "cost": float(cost.iloc[0]) if len(cost) else np.nan,
            }
        )
    return out


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _signed(v: float) -> str:
    return f"{100 * v:+.2f}"


def render_markdown(
    table: pd.DataFrame,
    plain: dict,
    meta: dict,
    paired: Optional[pd.DataFrame] = None,
    agreement: Optional[dict] = None,
    grid: Optional[pd.DataFrame] = None,
    finding: Optional[tuple[str, str, list]] = None,
) -> str:
    lines = [f"# {meta.get('title', 'AdaLASE against the baselines')}", ""]
    for key, value in meta.items():
        if key != "title":
            lines.append(f"- {key}: {value}")
    lines += [
        f"- plain run: {plain['passes']:.0f} sample passes"
        + (f", {plain['device_s']:.2f} device-s (mean of `{plain['from']}` trials)" if plain["from"] else ""),
        "- accuracies in %, mean ± std (ddof=1) over seeds; per seed the configuration is selected on val accuracy "
        "and its test accuracy is taken at the epoch of its best val accuracy",
        "- compute per seed; 'to within 0.5' = compute spent (in plain runs, by sample passes) until the method's "
        "best-so-far val accuracy came within 0.5 points of the best val accuracy any method found for that seed, "
        "averaged over the seeds where it did (their count in brackets when not all)",
        "- device-s are timed inside each trial while other trials share the machine, so they move with "
        "contention; sample passes do not (`benchmarks/overhead.py` times methods side by side on an idle machine); "
        "a trial of several data-parallel workers counts the device-s of all of them, and global sample passes",
        "",
        "| method | seeds | trials | best val acc | test acc (selected on val) | device-s / seed | "
        "sample passes / seed | × plain run (passes) | × plain run (device-s) | to within 0.5 (× plain) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        within = (
            "never"
            if r.to_within_seeds == 0
            else f"{r.to_within_multiple:.2f}"
            + (f" ({r.to_within_seeds}/{r.seeds} seeds)" if r.to_within_seeds < r.seeds else "")
        )
        failed = f" ({r.failed} failed)" if r.failed else ""
        device_multiple = "n/a" if np.isnan(r.plain_run_multiple_device) else f"{r.plain_run_multiple_device:.2f}"
        lines.append(
            f"| {r.method} | {r.seeds} | {r.trials}{failed} | {_pm(r.best_val_acc, r.best_val_acc_std)} | "
            f"{_pm(r.test_acc, r.test_acc_std)} | {r.device_s_per_seed:.1f} | {r.passes_per_seed:.0f} | "
            f"{r.plain_run_multiple:.2f} | {device_multiple} | {within} |"
        )
    if len(table) and "PARTIAL" in meta:  # incomplete methods: no winner is named among them
        lines += ["", "No method is named the least costly: the benchmark is PARTIAL (see above)."]
    elif len(table):
        reached = table[table["to_within_seeds"] > 0]
        if len(reached):
            best = (
                reached.assign(order=-reached["to_within_seeds"]).sort_values(["order", "to_within_multiple"]).iloc[0]
            )
            lines += [
                "",
                f"Least compute to come within 0.5 points of the best, in the most seeds: **{best['method']}** "
                f"({best['to_within_multiple']:.2f} plain runs, {best['to_within_seeds']}/{best['seeds']} seeds).",
            ]
    if paired is not None and len(paired):
        lines += [
            "",
            "## Paired differences in test accuracy (points, method − reference, same seeds)",
            "",
            "A 95% CI that excludes 0 is a difference beyond the seed noise.",
            "",
            "| method | against | seeds | mean difference | 95% CI (bootstrap over seeds) |",
            "|---|---|---|---|---|",
        ]
        for r in paired.itertuples():
            ci = "n/a (one seed)" if np.isnan(r.ci_low) else f"[{_signed(r.ci_low)}, {_signed(r.ci_high)}]"
            lines.append(f"| {r.method} | {r.against} | {r.seeds} | {_signed(r.mean_diff)} | {ci} |")
    if grid is not None and len(grid):
        lines += [
            "",
            "## Where DA helps: the grid's fixed sites",
            "",
            "| site | val acc | test acc | seeds |",
            "|---|---|---|---|",
        ]
        for site, r in grid.iterrows():
            lines.append(
                f"| {site} | {_pm(r['val'], r['val_std'])} | {_pm(r['test'], r['test_std'])} | {int(r['seeds'])} |"
            )
        spread = grid["val"].max() - grid["val"].min()
        pooled = float(np.sqrt(np.nanmean(np.square(grid["val_std"].to_numpy()))))
        ratio = f"{spread / pooled:.1f}× the pooled seed std ({100 * pooled:.2f})" if pooled > 0 else "n/a (one seed)"
        lines.append(f"\nBest minus worst site (val): {100 * spread:.2f} points = {ratio}.")
    if agreement:
        tied = f" (tied within one seed std: {', '.join(agreement['tied'])})" if agreement["tied"] else ""
        lines += [
            "",
            "## Does AdaLASE's q find the grid's best site?",
            "",
            f"The grid's best site on val accuracy: **{agreement['best_site']}**{tied}.",
            "",
            "| method | seeds where argmax q_final is the best site | Spearman(q_final, grid val acc) | "
            "q_final, mean ± std over seeds | argmax per seed |",
            "|---|---|---|---|---|",
        ]
        site_names = list(grid.index) if grid is not None else []
        for method, a in agreement["methods"].items():
            q = ", ".join(f"{s} {m:.3f} ± {sd:.3f}" for s, m, sd in zip(site_names, a["q_mean"], a["q_std"]))
            lines.append(f"| {method} | {a['agree']}/{a['seeds']} | {a['rho']:+.2f} | {q} | {', '.join(a['argmax'])} |")
    if finding and finding[2]:
        target, why, rows = finding
        lines += [
            "",
            f"## Which arm each method's selected configuration favours (target: **{target}**, {why})",
            "",
            "Per seed, the configuration each method selects on val; its top arm is the argmax of AdaLASE's "
            "q_final, the grid's fixed arm, or the largest searched weight. `uniform` and `none` favour no arm.",
            "",
            f"| method | seeds whose top arm is {target} | mean weight on {target} | × plain run (passes) | "
            "top arm per seed |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['method']} | {r['found']}/{r['seeds']} | {r['share']:.3f} | {r['cost']:.2f} | "
                f"{', '.join(r['tops'])} |"
            )
    return "\n".join(lines) + "\n"


def _curves(ok: pd.DataFrame, plain_passes: float) -> dict:
    """Per method: (x, mean, lo, hi) of best-so-far val accuracy against cumulative compute, over seeds."""
    out = {}
    for method, g in ok.groupby("method", sort=False):
        per_seed = []
        for _, s in g.groupby("seed"):
            s = s.sort_values("finished_at", kind="stable")
            per_seed.append(
                (s["sample_passes"].cumsum().to_numpy() / plain_passes, s["best_val_acc"].cummax().to_numpy())
            )
        grid = np.unique(np.concatenate([x for x, _ in per_seed]))
        # step functions: a seed's best-so-far at compute c is its last value with x <= c (nan before its first trial)
        ys = (
            np.array(
                [
                    [y[np.searchsorted(x, c, side="right") - 1] if c >= x[0] else np.nan for c in grid]
                    for x, y in per_seed
                ]
            )
            * 100
        )
        with np.errstate(all="ignore"):
            out[method] = (grid, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0))
    return out


def plot_cost_to_accuracy(trials: pd.DataFrame, plain_passes: float, path: Path) -> None:
    """Best-so-far val accuracy against cumulative compute (plain runs), one line per method,
    the mean over seeds with the band between the worst and the best seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, (x, mean, lo, hi) in _curves(finished(trials), plain_passes).items():
        (line,) = ax.step(x, mean, where="post", marker="o", markersize=3, label=method)
        ax.fill_between(x, lo, hi, step="post", alpha=0.15, color=line.get_color())
    ax.set_xlabel("cumulative compute (plain training runs, by sample passes)")
    ax.set_ylabel("best-so-far val accuracy (%)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Cost to accuracy (mean over seeds; band: worst to best seed)")
    fig.tight_layout()
    atomic_write(path, figure_bytes(fig, dpi=120))
    plt.close(fig)


def plot_cost_vs_accuracy(trials: pd.DataFrame, plain_passes: float, path: Path) -> None:
    """One point per method and seed: its total compute against the test accuracy it selected on val."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = per_seed_table(trials)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, g in seeds.groupby("method", sort=False):
        ax.scatter(g["sample_passes"] / plain_passes, 100 * g["test_acc_selected"], s=18, alpha=0.7, label=method)
    ax.set_xlabel("compute per seed (plain training runs, by sample passes)")
    ax.set_ylabel("test accuracy of the val-selected configuration (%)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Cost against accuracy (one point per method and seed)")
    fig.tight_layout()
    atomic_write(path, figure_bytes(fig, dpi=120))
    plt.close(fig)


def _heat(
    ax: Axes, grid: np.ndarray, sites: Sequence[str], variants: Sequence[str], title: str, fmt: str = "{:.2f}"
) -> AxesImage:
    """One (sites x ops) heat map with its values written in the cells."""
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(variants)), list(variants), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(sites)), list(sites), fontsize=8)
    ax.set_title(title, fontsize=9)
    finite = grid[np.isfinite(grid)]
    mid = (finite.max() + finite.min()) / 2 if len(finite) else 0.0
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="black" if v > mid else "white")
    return image


def plot_joint_weights(trials: pd.DataFrame, arms: Sequence[str], path: Path, grid: Optional[pd.DataFrame]) -> None:
    """Heat maps (sites x ops): the grid's mean val accuracy per pair, and per method the mean over
    seeds of the weights its selected configuration gives each pair (AdaLASE: q_final)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = joint_layout(arms)
    assert layout is not None, "a joint setting's arms"
    sites, variants = layout
    panels = []
    if grid is not None and len(grid) == len(arms):
        panels.append(("grid: mean val acc (%)", 100 * grid["val"].reindex(arms).to_numpy(dtype=float), "{:.0f}"))
    tops = top_arms(trials, arms)
    for method, g in tops.groupby("method", sort=False):
        if method != "grid":
            panels.append((f"{method}: mean weight", np.mean(np.stack(list(g["q"])), 0), "{:.2f}"))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 0.45 * len(sites) * rows + 1.6 * rows), squeeze=False)
    for ax, (title, values, fmt) in zip(axes.flat, panels):
        _heat(ax, as_grid(values, len(sites)), sites, variants, title, fmt)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.suptitle("Where each method puts its weight over (site, op), mean over seeds", fontsize=10)
    fig.tight_layout()
    atomic_write(path, figure_bytes(fig, dpi=110))
    plt.close(fig)


def plot_q_history(q_history: npt.ArrayLike, arms: Sequence[str], path: Path) -> None:
    """AdaLASE's q over epochs: one line per site; in a joint setting, heat maps (sites x ops) at
    four epochs and the two marginals over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.asarray(q_history, dtype=float)
    epochs = np.arange(1, len(q) + 1)
    layout = joint_layout(arms)
    if layout is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, site in enumerate(arms):
            ax.plot(epochs, q[:, i], label=site)
        ax.set_xlabel("epoch")
        ax.set_ylabel("q (site probability)")
        ax.set_title("AdaLASE q trajectory")
        ax.legend(fontsize=8)
    else:
        sites, variants = layout
        shown = sorted({0, len(q) // 3, (2 * len(q)) // 3, len(q) - 1})
        fig, axes = plt.subplots(2, max(len(shown), 2), figsize=(3.0 * max(len(shown), 2), 6.0), squeeze=False)
        for ax, e in zip(axes[0], shown):
            _heat(ax, as_grid(q[e], len(sites)), sites, variants, f"q after epoch {e + 1}")
        for ax in axes[0][len(shown) :]:
            ax.set_axis_off()
        grids = q.reshape(len(q), len(sites), len(variants))
        for ax, (name, values, labels) in zip(axes[1], (("site", grids.sum(2), sites), ("op", grids.sum(1), variants))):
            for i, label in enumerate(labels):
                ax.plot(epochs, values[:, i], label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"marginal q per {name}")
            ax.legend(fontsize=7)
        for ax in axes[1][2:]:
            ax.set_axis_off()
        fig.suptitle("AdaLASE's joint q over (site, op)", fontsize=10)
    fig.tight_layout()
    atomic_write(path, figure_bytes(fig, dpi=110))
    plt.close(fig)


def _placeholder_plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.text(0.5, 0.5, "no finished trial", ha="center", va="center")
    ax.set_axis_off()
    atomic_write(path, figure_bytes(fig, dpi=80))
    plt.close(fig)


def incomplete(parents: list[dict]) -> Optional[str]:
    """Why a benchmark's MLflow runs (``parents``: its methods' parent runs, from
    ``Tracking.method_parents``) are not a complete benchmark, or None when they are: its writer
    still holds its lock (it is running), a method's run was left open, or a method has not started."""
    from .locks import describe_holder, lock_holder

    planned: list[str] = next((p["tags"]["methods"].split(",") for p in parents if p["tags"].get("methods")), [])
    holder = next((h for p in parents if p["tags"].get("lock") for h in [lock_holder(p["tags"]["lock"])] if h), None)
    done = [p["method"] for p in parents if p["status"] in ("FINISHED", "FAILED")]
    open_ = [p["method"] for p in parents if p["status"] not in ("FINISHED", "FAILED")]
    missing = [m for m in planned if m not in {p["method"] for p in parents}]
    if holder is None and not open_ and not missing:
        return None
    if holder is not None:
        why = f"the benchmark is still running ({describe_holder(holder)})"
    else:
        why = "the benchmark did not finish (its writer is gone: resume it)"
    return (
        f"{why}; methods finished: {', '.join(done) or 'none'}; running or stopped: {', '.join(open_) or 'none'}; "
        f"not started: {', '.join(missing) or 'none'}; this is what had finished so far"
    )


def write_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    plain_passes: float,
    meta: Optional[dict] = None,
    known: Optional[str] = None,
) -> dict:
    """Write results.csv, report.md, cost_to_accuracy.png and cost_vs_accuracy.png (and, in a
    joint (site x op) setting, joint_q.png); returns their paths and the method table.
    ``known``: the arm known to be right by construction, if any (else the grid's pick is the target)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "results.csv",
        "md": out / "report.md",
        "png": out / "cost_vs_accuracy.png",
        "curve_png": out / "cost_to_accuracy.png",
    }
    atomic_write(paths["csv"], trials.to_csv(index=False))
    if not len(finished(trials)):  # an interrupted or failed benchmark: say so, never a traceback
        lines = render_markdown(pd.DataFrame(), {"passes": plain_passes, "device_s": np.nan, "from": None}, meta or {})
        none = "\nNo trial finished, so there is nothing to compare yet.\n"
        atomic_write(paths["md"], lines.split("\n| method |")[0] + none)
        for key in ("png", "curve_png"):
            _placeholder_plot(paths[key])
        return {**paths, "table": pd.DataFrame()}
    table, plain = method_table(trials, plain_passes)
    sites = sites_of(trials)
    grid = grid_by_site(trials, sites) if sites else None
    agreement = site_agreement(trials, sites) if sites else None
    target = known or (str(grid["val"].idxmax()) if grid is not None and len(grid) == len(sites) else None)
    finding = None
    if target is not None and target in sites:
        why = "known by construction" if known else "the grid's best arm on val"
        finding = (target, why, arm_finding(trials, sites, table, target))
    text = render_markdown(table, plain, meta or {}, paired_differences(trials), agreement, grid, finding)
    if joint_layout(sites) is not None and not top_arms(trials, sites).empty:
        paths["joint_png"] = out / "joint_q.png"
        plot_joint_weights(trials, sites, paths["joint_png"], grid)
        text += "\n![where each method puts its weight](joint_q.png)\n"
    atomic_write(paths["md"], text)
    plot_cost_to_accuracy(trials, plain_passes, paths["curve_png"])
    plot_cost_vs_accuracy(trials, plain_passes, paths["png"])
    return {**paths, "table": table}
