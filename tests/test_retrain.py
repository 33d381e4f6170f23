"""Search, then retrain (adalase.retrain): the probe, the retrain with the probe's q fixed, their
costs, the selection within the retrain, and resume across the phase boundary. Also: each run
seed draws its own training subset."""

import numpy as np
import pytest

from adalase_tune.checkpoint import atomic_save, safe_load
from adalase_tune.config import ConfigError
from adalase_tune.data import build_data
from adalase_tune.engine import Trainer

from conftest import tiny_config

TIMING = {"cost/train_s", "cost/eval_s", "cost/adalase_s", "cost/device_s"}
RETRAIN = {"selection.method": "adalase", "adalase.retrain": True, "adalase.probe": 1.0, "train.epochs": 2}


def _plain(history):
    """Epochs without timings, phase, epoch number and cumulative passes (they run on from the probe)."""
    drop = TIMING | {"phase", "epoch", "cost/sample_passes"}
    return [{k: v for k, v in m.items() if k not in drop and not k.startswith("adalase/")} for m in history]


@pytest.mark.parametrize("source", ["train", "holdout"])
def test_the_retrain_is_exactly_a_probs_run_with_the_probes_final_q(source):
    run = Trainer(tiny_config(**RETRAIN, **{"adalase.val_source": source, "adalase.sharpen": 1.0})).run()
    probe, retrain = run["history"][:2], run["history"][2:]
    assert [m["phase"] for m in run["history"]] == [1, 1, 2, 2] and run["epochs"] == 4
    q = run["probe"]["q"]
    assert q == [probe[-1][f"adalase/q/{a}"] for a in run["arms"]] and abs(sum(q) - 1) < 1e-9
    assert max(q) - min(q) > 1e-4  # the probe learned something: q left uniform
    two = Trainer(tiny_config(**{"selection.method": "probs", "selection.weights": q, "train.epochs": 2})).run()
    assert _plain(retrain) == _plain(two["history"])
    # it trains on every training sample, also when the probe held some out
    assert run["splits"]["train"] == 100 and "pseudo_val_pool" not in run["splits"]
    # both phases count: the cost is the probe's plus a plain run's
    probe_passes = run["probe"]["cost"]["sample_passes"]
    assert probe_passes > 0 and run["cost"]["sample_passes"] == probe_passes + two["cost"]["sample_passes"]
    assert retrain[-1]["cost/sample_passes"] == run["cost"]["sample_passes"]
    # the probe's q is reported through the retrain, and q_history is the probe's
    assert all(m[f"adalase/q/{a}"] == v for m in retrain for a, v in zip(run["arms"], q))
    assert len(run["q_history"]) == 2 and run["q_final"] == q


def test_selection_is_made_among_the_retrains_epochs():
    run = Trainer(tiny_config(**RETRAIN)).run()
    retrain = run["history"][2:]
    best = max(retrain, key=lambda m: m["val/acc"])
    assert run["best_epoch"] in (3, 4) and run["best_val_acc"] == best["val/acc"]
    assert run["test_acc_at_best_val"] == run["history"][run["best_epoch"] - 1]["test/acc"]


@pytest.mark.parametrize("after", [1, 2, 3])  # in the probe, at the boundary, in the retrain
def test_resume_across_the_phase_boundary_equals_an_uninterrupted_run(tmp_path, after):
    cfg = tiny_config(**RETRAIN)
    full = Trainer(cfg).run()
    first = Trainer(cfg)
    for _ in range(after):
        first.run_epoch()
    atomic_save(first.state_dict(), tmp_path / "last.pt")
    resumed = Trainer(cfg)
    resumed.load_state_dict(safe_load(tmp_path / "last.pt"))
    assert resumed.phase == (1 if after < 2 else 2)
    out = resumed.run()
    untimed = lambda h: [{k: v for k, v in m.items() if k not in TIMING} for m in h]  # noqa: E731
    assert untimed(out["history"]) == untimed(full["history"])
    assert out["probe"]["q"] == full["probe"]["q"] and out["cost"]["sample_passes"] == full["cost"]["sample_passes"]


def test_probe_length_is_a_share_of_the_epochs_and_is_checked():
    assert Trainer(tiny_config(**{**RETRAIN, "adalase.probe": 0.25, "train.epochs": 8})).total_epochs == 10
    assert Trainer(tiny_config(**{**RETRAIN, "adalase.probe": 0.01})).probe_epochs == 1  # at least one
    assert Trainer(tiny_config(**{**RETRAIN, "selection.method": "uniform"})).total_epochs == 2  # adalase only
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=rf"adalase.probe = {bad}: must lie in \(0.0, 1.0\]"):
            tiny_config(**{"adalase.probe": bad})


def test_each_run_seed_draws_its_own_training_subset_unless_subset_seed_fixes_it():
    a, b = Trainer(tiny_config()), Trainer(tiny_config(**{"train.seed": 1}))
    assert len(a.data.train) == len(b.data.train) == 100
    assert set(a.data.train.ids) != set(b.data.train.ids)
    for t in (a, b):  # stratified: every class in the same proportion
        counts = np.bincount(t.data.train.y.numpy(), minlength=10)
        assert counts.max() - counts.min() <= 1
    # the same samples as a fixed subset_seed equal to the run seed, and the same seed the same samples
    fixed = build_data(tiny_config(**{"data.subset_seed": 1}).data)
    assert fixed.pool is None and list(fixed.train.ids) == list(b.data.train.ids)
    assert list(Trainer(tiny_config(**{"train.seed": 1})).data.train.ids) == list(b.data.train.ids)
    pinned = [Trainer(tiny_config(**{"data.subset_seed": 3, "train.seed": s})).data.train.ids for s in (0, 1)]
    assert list(pinned[0]) == list(pinned[1])
    # the val and test splits never move
    assert list(a.data.val.ids) == list(b.data.val.ids) and list(a.data.test.ids) == list(b.data.test.ids)
    with pytest.raises(ConfigError, match="data.subset_seed = -1"):
        tiny_config(**{"data.subset_seed": -1})


def test_holdout_is_drawn_with_the_subsets_seed():
    held = [
        set(
            Trainer(
                tiny_config(**{"selection.method": "adalase", "adalase.val_source": "holdout", "train.seed": s})
            ).pseudo_val.split.ids
        )
        for s in (0, 1)
    ]
    assert held[0] != held[1]


def test_sharpen_raises_the_probes_q_to_a_power_for_the_retrain():
    run = Trainer(tiny_config(**RETRAIN, **{"adalase.sharpen": 3.0})).run()
    q = np.array(run["probe"]["q"])
    want = q**3 / (q**3).sum()
    assert run["q_retrain"] == pytest.approx(want.tolist(), rel=1e-12) and max(want) > max(q)
    assert run["q_final"] == run["probe"]["q"]  # q_final stays what the probe learned
    assert all(m[f"adalase/q/{a}"] == v for m in run["history"][2:] for a, v in zip(run["arms"], run["q_retrain"]))
    two = Trainer(
        tiny_config(**{"selection.method": "probs", "selection.weights": run["q_retrain"], "train.epochs": 2})
    )
    assert _plain(run["history"][2:]) == _plain(two.run()["history"])
    flat = Trainer(tiny_config(**RETRAIN, **{"adalase.sharpen": 0.0})).run()
    assert flat["q_retrain"] == pytest.approx([1 / len(q)] * len(q))  # power 0: uniform
    for bad in (-1.0, 51.0):
        with pytest.raises(ConfigError, match=rf"adalase.sharpen = {bad}: must lie in \[0.0, 50.0\]"):
            tiny_config(**{"adalase.sharpen": bad})
