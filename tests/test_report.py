"""The comparison report: selection on val, spread over seeds, compute to within 0.5 points."""
import pandas as pd
import pytest

from adalase_tune.report import method_table, render_markdown, write_report


def trials():
    rows = []
    # method a: per seed, the val-best trial is not the test-best one
    for seed, (v1, t1, v2, t2) in enumerate([(0.90, 0.70, 0.80, 0.95), (0.92, 0.72, 0.85, 0.99)]):
        rows += [dict(method="a", seed=seed, status="TERMINATED", best_val_acc=v1, test_acc_at_best_val=t1,
                      device_s=2.0, sample_passes=100, finished_at=1.0),
                 dict(method="a", seed=seed, status="TERMINATED", best_val_acc=v2, test_acc_at_best_val=t2,
                      device_s=2.0, sample_passes=100, finished_at=2.0)]
    for seed, v in enumerate([0.80, 0.93]):  # method none: one plain run per seed
        rows.append(dict(method="none", seed=seed, status="TERMINATED", best_val_acc=v, test_acc_at_best_val=0.5,
                         device_s=1.0, sample_passes=100, finished_at=0.5))
    rows.append(dict(method="none", seed=1, status="ERROR", best_val_acc=None, test_acc_at_best_val=None,
                     device_s=None, sample_passes=None, finished_at=None))
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
    assert "| a | 2 | 4 | 91.00 ± 1.00 | 71.00 ± 1.00 |" in md and "1.00 (1/2 seeds)" in md


def test_write_report_makes_three_files(tmp_path):
    out = write_report(trials(), tmp_path, 100, {"title": "t"})
    assert out["csv"].is_file() and out["md"].read_text().startswith("# t")
    assert out["png"].stat().st_size > 1000
