"""The comparison report: selection on val, spread over seeds, compute to within 0.5 points."""

import pandas as pd
import pytest

from adalase_tune.report import (
    bootstrap_ci,
    grid_by_site,
    method_table,
    paired_differences,
    render_markdown,
    site_agreement,
    write_report,
)


def trials():
    rows = []
    # method a: per seed, the val-best trial is not the test-best one
    for seed, (v1, t1, v2, t2) in enumerate([(0.90, 0.70, 0.80, 0.95), (0.92, 0.72, 0.85, 0.99)]):
        rows += [
            dict(
                method="a",
                seed=seed,
                status="TERMINATED",
                best_val_acc=v1,
                test_acc_at_best_val=t1,
                device_s=2.0,
                sample_passes=100,
                finished_at=1.0,
            ),
            dict(
                method="a",
                seed=seed,
                status="TERMINATED",
                best_val_acc=v2,
                test_acc_at_best_val=t2,
                device_s=2.0,
                sample_passes=100,
                finished_at=2.0,
            ),
        ]
    for seed, v in enumerate([0.80, 0.93]):  # method none: one plain run per seed
        rows.append(
            dict(
                method="none",
                seed=seed,
                status="TERMINATED",
                best_val_acc=v,
                test_acc_at_best_val=0.5,
                device_s=1.0,
                sample_passes=100,
                finished_at=0.5,
            )
        )
    rows.append(
        dict(
            method="none",
            seed=1,
            status="ERROR",
            best_val_acc=None,
            test_acc_at_best_val=None,
            device_s=None,
            sample_passes=None,
            finished_at=None,
        )
    )
    return pd.DataFrame(rows)


def test_selection_is_on_val_and_compute_to_within_counts_seeds():
    table, plain = method_table(trials(), plain_passes=100)
    a = table.set_index("method").loc["a"]
    assert a["test_acc"] == pytest.approx(0.71)  # the val-selected trials, not the 0.95/0.99 ones
    assert a["best_val_acc"] == pytest.approx(0.91)
    assert a["plain_run_multiple"] == pytest.approx(2.0) and a["plain_run_multiple_device"] == pytest.approx(4.0)
    # seed 0: best 0.90 (a) reached by a's first trial; seed 1: best 0.93 (none), a reaches 0.92 >= 0.925? no
    assert a["to_within_seeds"] == 1 and a["to_within_multiple"] == pytest.approx(1.0)
    n = table.set_index("method").loc["none"]
    assert n["failed"] == 1 and n["to_within_seeds"] == 1
    md = render_markdown(table, plain, {"title": "t"})
    assert "| a | 2 | 4 | 91.00 ± 1.41 | 71.00 ± 1.41 |" in md and "1.00 (1/2 seeds)" in md  # std with ddof=1


def test_write_report_makes_its_files(tmp_path):
    out = write_report(trials(), tmp_path, 100, {"title": "t"})
    assert out["csv"].is_file() and out["md"].read_text().startswith("# t")
    assert out["png"].stat().st_size > 1000 and out["curve_png"].stat().st_size > 1000


SITES = ["input", "hidden1", "hidden2"]


def study(seeds=5):
    """A grid where input is best by val (0.9 vs 0.6/0.5), AdaLASE with q on input in 4 of 5 seeds."""
    rows = []
    for seed in range(seeds):
        for i, (v, t) in enumerate([(0.90, 0.88), (0.60, 0.58), (0.50, 0.52)]):
            onehot = {f"da_prob/{s}": float(i == j) for j, s in enumerate(SITES)}
            rows.append(
                dict(
                    method="grid",
                    seed=seed,
                    status="TERMINATED",
                    best_val_acc=v + 0.01 * seed,
                    test_acc_at_best_val=t,
                    device_s=1.0,
                    sample_passes=100,
                    finished_at=i,
                    **onehot,
                )
            )
        q = [0.8, 0.1, 0.1] if seed < 4 else [0.1, 0.1, 0.8]
        rows.append(
            dict(
                method="adalase",
                seed=seed,
                status="TERMINATED",
                best_val_acc=0.85,
                device_s=1.2,
                test_acc_at_best_val=0.80 + 0.01 * seed,
                sample_passes=110,
                finished_at=0,
                **{f"q/{s}": v for s, v in zip(SITES, q)},
            )
        )
        rows.append(
            dict(
                method="uniform",
                seed=seed,
                status="TERMINATED",
                best_val_acc=0.7,
                device_s=1.0,
                test_acc_at_best_val=0.70,
                sample_passes=100,
                finished_at=0,
                **{f"da_prob/{s}": 1.0 for s in SITES},
            )
        )
    return pd.DataFrame(rows)


def test_paired_differences_have_a_bootstrap_ci_over_seeds():
    diffs = paired_differences(study()).set_index(["method", "against"])
    a = diffs.loc[("adalase", "uniform")]
    assert a["seeds"] == 5 and a["mean_diff"] == pytest.approx(0.12)  # 0.80..0.84 against 0.70
    assert 0.10 <= a["ci_low"] < a["mean_diff"] < a["ci_high"] <= 0.14
    g = diffs.loc[("grid", "uniform")]  # the grid selects input on val in every seed: 0.88 - 0.70, no spread
    assert g["ci_low"] == pytest.approx(0.18) and g["ci_high"] == pytest.approx(0.18)
    lo, hi = bootstrap_ci([0.0, 1.0])
    assert lo == 0.0 and hi == 1.0


def test_site_agreement_counts_seeds_and_rank_correlation():
    agreement = site_agreement(study(), SITES)
    assert agreement["best_site"] == "input" and agreement["tied"] == []
    a = agreement["methods"]["adalase"]
    assert a["agree"] == 4 and a["seeds"] == 5 and a["argmax"][4] == "hidden2"
    # q (0.8, 0.1, 0.1) ties hidden1/hidden2: rho 0.87 in four seeds; (0.1, 0.1, 0.8): -0.87 in one
    assert a["rho"] == pytest.approx((4 * 0.8660254 - 0.8660254) / 5, abs=1e-6)
    grid = grid_by_site(study(), SITES)
    assert list(grid.index) == SITES and grid.loc["input", "test"] == pytest.approx(0.88)


def test_report_shows_paired_differences_grid_and_agreement(tmp_path):
    out = write_report(study(), tmp_path, 100, {"title": "t", "splits": "train 200, val 840, test 1800"})
    md = out["md"].read_text()
    assert "- splits: train 200, val 840, test 1800" in md
    assert "| adalase | uniform | 5 | +12.00 | [" in md
    assert "The grid's best site on val accuracy: **input**" in md and "| adalase | 4/5 |" in md
    assert "Best minus worst site (val): 40.00 points" in md
    csv = pd.read_csv(out["csv"])
    assert {"q/input", "da_prob/hidden2"} <= set(csv.columns)


def test_a_tie_on_val_selects_the_same_trial_whatever_the_row_order():
    """A live report (Tune's finish times in whole seconds) and one rebuilt from MLflow (in ms)
    order tied trials differently; both must select the same one (the lowest trial id)."""
    from adalase_tune.report import per_seed_table

    base = dict(method="m", seed=0, status="TERMINATED", best_val_acc=0.8, device_s=1.0, sample_passes=100)
    rows = [
        {**base, "trial_id": "t_00001", "test_acc_at_best_val": 0.70, "finished_at": 5.0},
        {**base, "trial_id": "t_00000", "test_acc_at_best_val": 0.60, "finished_at": 5.0},
        {**base, "trial_id": "t_00002", "best_val_acc": 0.7, "test_acc_at_best_val": 0.99, "finished_at": 4.0},
    ]
    live = per_seed_table(pd.DataFrame(rows))
    rebuilt = per_seed_table(pd.DataFrame(rows[::-1]).assign(finished_at=[4.0, 5.2, 5.1]))
    assert live["test_acc_selected"].tolist() == rebuilt["test_acc_selected"].tolist() == [0.60]
