"""AdaLASE over (site x op) pairs against every baseline over the same pairs, on the known-answer
task where the right pair is known by construction (search_spaces/motifs_joint.yaml: translate
at the input; docs/joint.md).

1. ``run_benchmark`` with every method and the config's budgets (5 seeds), through Ray Tune:
   the report says, per method, in how many seeds its selected configuration weights the known
   pair most, at what compute, with paired differences against uniform, none and the grid.
2. The AdaLASE update forms in the joint setting, side by side in one process pool (one torch
   thread each), the same seeds: test accuracy, the top pair per seed, and the joint q over time
   as heat maps (mean over seeds) with its marginals.
3. The signal behind them: each pair's hypergradient with q held uniform, early and late in the
   run, for both pseudo-validation sources.

    python benchmarks/joint.py                # about 12 minutes on 2 cores
    python benchmarks/joint.py --smoke-test
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from adalase_tune import load_config, load_sweep, run_benchmark
from adalase_tune.tuning import SweepOptions

from _common import RESULTS, goals, write_result

CONFIG = "search_spaces/motifs_joint.yaml"
KNOWN = "input/translate"
ONE_RUN = ["adalase.retrain=false", "adalase.val_source=train"]  # the forms below are one-run forms (form sets win)

FORMS = {  # the one-run forms (the benchmark's own `adalase` trials are the two-phase default)
    "adalase_single": [],
    "adalase_single[faithful]": ["adalase.preset=faithful"],
    "adalase_single[normalized]": ["adalase.preset=normalized"],
    "adalase_single[holdout]": ["adalase.val_source=holdout"],
    "adalase_single[faithful,holdout]": ["adalase.preset=faithful", "adalase.val_source=holdout"],
}
SOURCES = ("train", "holdout")  # the pseudo-validation data whose signal is measured with q held uniform


def one_run(job: tuple) -> dict:
    import torch

    from adalase_tune import Trainer

    label, sets, seed, smoke = job
    torch.set_num_threads(1)
    extra = [f"train.seed={seed}", "selection.method=adalase"] + (["train.epochs=2"] if smoke else [])
    s = Trainer(load_config(CONFIG, ONE_RUN + sets + extra, extra_sections=("sweep",))).run()
    return {
        "label": label,
        "seed": seed,
        "test": s["test_acc_at_best_val"],
        "arms": s["arms"],
        "q": s["q_history"],
        "passes": s["cost"]["sample_passes"],
    }


def signal_run(job: tuple) -> dict:
    """The hypergradient each pair gets while q stays uniform (faithful: one per step, eta 0): per
    pair, the mean of the standardised hypergradient in the first and the last quarter of the run."""
    import torch

    from adalase_tune import Trainer

    source, seed, smoke = job
    torch.set_num_threads(1)
    sets = [*ONE_RUN, "selection.method=adalase", "adalase.preset=faithful", "adalase.eta=0"]
    sets.append(f"adalase.val_source={source}")
    sets += [f"train.seed={seed}"] + (["train.epochs=2"] if smoke else [])
    trainer = Trainer(load_config(CONFIG, sets, extra_sections=("sweep",)))
    seen: list = []
    observe = trainer.policy.observe

    def record(arm: int, dot: float) -> None:
        seen.append((arm, dot))
        observe(arm, dot)

    trainer.policy.observe = record  # type: ignore[method-assign]
    trainer.run()
    arms, dots = np.array([a for a, _ in seen]), np.array([d for _, d in seen])
    n, out = len(dots), {"source": source, "seed": seed, "arms": [a.name for a in trainer.arms]}
    for part, span in (("early", slice(0, n // 4)), ("late", slice(3 * n // 4, n))):
        a, d = arms[span], dots[span]
        z = (d - d.mean()) / d.std()
        out[part] = [float(z[a == i].mean()) if (a == i).any() else float("nan") for i in range(len(out["arms"]))]
    return out


def signal_section(runs: list[dict]) -> str:
    arms = runs[0]["arms"]
    lines = [
        "## The signal itself: hypergradients with q held uniform",
        "",
        "AdaLASE raises a pair's q when its hypergradient ⟨g_val, g_pair⟩ is above the others'. Here q is held "
        "uniform (`adalase.eta=0`, a hypergradient every step) and each pair's hypergradients are standardised "
        "against all of that quarter of the run and averaged: positive means AdaLASE would favour the pair. "
        f"Mean over {len({r['seed'] for r in runs})} seeds; `train` is the paper's pseudo-validation source "
        "(the run's own training samples), `holdout` (the default) a stratified part held out of training.",
        "",
        "| pseudo-val source | part of the run | " + " | ".join(arms) + " |",
        "|---|---|" + "---|" * len(arms),
    ]
    for source in SOURCES:
        rs = [r for r in runs if r["source"] == source]
        for part in ("early", "late"):
            z = np.nanmean([r[part] for r in rs], 0)
            best = int(np.nanargmax(z))
            cells = [f"**{v:+.2f}**" if i == best else f"{v:+.2f}" for i, v in enumerate(z)]
            lines.append(f"| {source} | {part} (quarter) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forms_section(runs: list[dict], out: Path, trials, plain_passes: float) -> str:
    """Each form's accuracy, its paired differences (by seed) to the benchmark's uniform and grid
    selections, its compute, and whether its q finds the known pair."""
    from adalase_tune.report import bootstrap_ci, per_seed_table, plot_q_history

    chosen = per_seed_table(trials).pivot_table(index="seed", columns="method", values="test_acc_selected")
    arms = runs[0]["arms"]

    def paired(method: str, rs: list[dict]) -> str:
        """Mean [95% CI] of the form's test accuracy minus ``method``'s selection, paired by seed (points)."""
        d = np.array([r["test"] for r in rs]) - chosen[method].reindex([r["seed"] for r in rs]).to_numpy()
        lo, hi = bootstrap_ci(d)
        return f"{100 * d.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"

    lines = [
        "## The update forms in the joint setting (direct runs, one process pool)",
        "",
        "Each form over the 9 pairs, the same seeds; test accuracy at the epoch of best val accuracy. "
        "`adalase_single` is the one-run form with the default preset, the same runs as the benchmark's "
        "`adalase_single` trials. Differences are "
        "paired by seed with the benchmark's `uniform` run and the grid's val-selected pair (bootstrap 95% CI "
        "over seeds); compute is the form's sample passes over one plain run's (with `holdout` the run trains "
        "on fewer samples, so a pass costs less).",
        "",
        f"| form | test acc (%) | − uniform [95% CI] | − grid's pick [95% CI] | × plain run (passes) "
        f"| seeds whose top pair is {KNOWN} | q on {KNOWN} (mean) | top pair per seed | q over time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label]
        finals = np.array([r["q"][-1] for r in rs])
        tops = [arms[i] for i in finals.argmax(1)]
        acc = np.array([r["test"] for r in rs])
        diffs = []
        for ref in ("uniform", "grid"):
            if ref not in chosen:
                diffs.append("n/a")
                continue
            diffs.append(paired(ref, rs))
        passes = np.mean([r["passes"] for r in rs]) / plain_passes
        slug = label.replace("[", "_").replace("]", "").replace(",", "_")
        plot_q_history(np.mean([r["q"] for r in rs], 0), arms, out / f"q_{slug}.png")
        lines.append(
            f"| {label} | {100 * acc.mean():.2f} ± {100 * acc.std(ddof=1) if len(acc) > 1 else 0:.2f} | "
            f"{diffs[0]} | {diffs[1]} | {passes:.2f} | "
            f"{sum(t == KNOWN for t in tops)}/{len(rs)} | {finals[:, arms.index(KNOWN)].mean():.3f} | "
            f"{', '.join(tops)} | [plot](motifs_joint/q_{slug}.png) |"
        )
    searches = [m for m in ("random", "optuna", "asha", "pbt") if m in chosen]
    if searches:
        lines += [
            "",
            "Each form against the black-box searches' val-selected configurations, paired by seed "
            "(test accuracy points, bootstrap 95% CI over seeds):",
            "",
            "| form | " + " | ".join(f"− {m}" for m in searches) + " |",
            "|---|" + "---|" * len(searches),
        ]
        for label in dict.fromkeys(r["label"] for r in runs):
            rs = [r for r in runs if r["label"] == label]
            cells = [paired(m, rs) for m in searches]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    smoke = args.smoke_test
    out = (Path(tempfile.mkdtemp()) if smoke else RESULTS) / "motifs_joint"
    cfg = load_config(CONFIG, ["train.epochs=1"] if smoke else [])
    sweep = load_sweep(CONFIG)
    seeds = [0] if smoke else list(sweep.seeds)
    methods = ["adalase", "grid"] if smoke else list(sweep.methods)
    options = SweepOptions(
        seeds=seeds,
        budgets=sweep.methods,
        max_concurrent=sweep.max_concurrent,
        storage=tempfile.mkdtemp(),
        name="joint-motifs",
    )
    result = run_benchmark(cfg, methods, options, out=str(out), tracking_uri=None, known=KNOWN)
    report = result.files["md"].read_text().split("\n", 1)[1].replace("](joint_q.png)", "](motifs_joint/joint_q.png)")
    jobs = [(label, sets, seed, smoke) for label, sets in FORMS.items() for seed in seeds]
    with ProcessPoolExecutor(2) as pool:
        runs = list(pool.map(one_run, jobs))
        signals = list(pool.map(signal_run, [(source, seed, smoke) for source in SOURCES for seed in seeds]))
    forms = forms_section(runs, out, result.trials, result.plain_passes)
    verdict = "" if smoke else goals(result.trials, result.sites, result.plain_passes)
    body = (
        f"`run_benchmark(load_config({CONFIG!r}), {methods}, seeds {seeds}, known={KNOWN!r})`\n\n{verdict}\n"
        f"![cost to accuracy](motifs_joint/cost_to_accuracy.png)\n{report}\n{forms}\n\n"
        f"![the one-run form's joint q over time, mean over seeds](motifs_joint/q_adalase_single.png)\n\n"
        f"{signal_section(signals)}\n"
    )
    path = write_result(
        "joint", "AdaLASE over (site x op) pairs against the baselines: the joint known answer", body, smoke
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
