"""The engine: determinism, exact resume, cost accounting, summary, pseudo-val provenance, callbacks."""

import time

import numpy as np
import pytest
import torch

from adalase_tune.checkpoint import atomic_save, safe_load
from adalase_tune.config import ConfigError
from adalase_tune.data import build_data
from adalase_tune.engine import Callback, CostMeter, History, NonFiniteError, Trainer
from adalase_tune.policies._base import q_movement

from conftest import ONE_RUN, tiny_config

TIMING = {"cost/train_s", "cost/eval_s", "cost/adalase_s", "cost/device_s"}


def _untimed(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


SETTINGS = [
    {"selection.method": "adalase"},
    {"selection.method": "adalase", "adalase.preset": "fast", "adalase.every": 3, "adalase.val_source": "holdout"},
    {"selection.method": "adalase", "adalase.preset": "fast", "adalase.every": 2, "adalase.credit": "step"},
    {"selection.method": "adalase", "adalase.preset": "fast", "adalase.every": 3, "adalase.credit": "window"},
    {"selection.method": "uniform", "augment.op": "noise", "data.input_augment": True},
    {"selection.method": "probs", "selection.weights": [1, 0, 2, 0, 1], "augment.op": "cutmix"},
]


@pytest.mark.parametrize("extra", SETTINGS)
def test_same_config_and_seed_replay_the_same_metrics(extra):
    a = Trainer(tiny_config(**extra)).run()
    b = Trainer(tiny_config(**extra)).run()
    assert _untimed(a["history"]) == _untimed(b["history"])
    c = Trainer(tiny_config(**{**extra, "train.seed": 1})).run()
    assert _untimed(c["history"]) != _untimed(a["history"])


@pytest.mark.parametrize("extra", SETTINGS)
def test_resume_after_epoch_k_equals_an_uninterrupted_run(tmp_path, extra):
    cfg = tiny_config(**{**extra, "train.epochs": 3})
    full = Trainer(cfg).run()
    first = Trainer(cfg)
    first.run_epoch()
    atomic_save(first.state_dict(), tmp_path / "last.pt")
    del first
    resumed = Trainer(cfg)
    resumed.load_state_dict(safe_load(tmp_path / "last.pt"))
    out = resumed.run()
    assert _untimed(out["history"]) == _untimed(full["history"])
    assert out["q_history"] == full["q_history"]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    t = Trainer(tiny_config())
    t.run_epoch()
    other = Trainer(tiny_config(**{"train.lr": 0.01}))
    with pytest.raises(ValueError, match=r"another config \(train.lr: 0.01 now, 0.05 before\); resume with"):
        other.load_state_dict(t.state_dict(), source="last.pt")


@pytest.mark.parametrize(
    "change",
    [
        {"data.num_workers": 2},  # how the data are read, not what is computed
        {"data.download": True},
        {"data.root": "/elsewhere/data"},  # digits never reads data.root
        {"data.path": "/some/file.npz"},  # nor data.path
    ],
)
def test_resume_accepts_settings_the_run_does_not_compute_with(tmp_path, change):
    t = Trainer(tiny_config())
    t.run_epoch()
    moved = Trainer(tiny_config(**change))
    moved.load_state_dict(t.state_dict(), source="last.pt")
    assert moved.epoch == 1


def test_paths_a_run_never_reads_stay_as_given_so_folders_compare_alike(tmp_path, monkeypatch):
    from adalase_tune.config import differing_keys

    monkeypatch.chdir(tmp_path)
    here = tiny_config().with_absolute_paths().to_dict()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert differing_keys(here, tiny_config().with_absolute_paths().to_dict()) == []
    cifar = tiny_config(**{"data.name": "cifar10"}).with_absolute_paths()  # cifar10 reads data.root
    assert cifar.data.root == str(tmp_path / "other" / "data")


def test_cost_accounting_counts_every_sample_pass():
    cfg = tiny_config(**{"selection.method": "uniform", "train.epochs": 2})
    s = Trainer(cfg).run()
    assert s["cost"]["sample_passes"] == 2 * 100
    assert s["cost"]["adalase_s"] == 0 and s["cost"]["train_s"] > 0 and s["cost"]["eval_s"] > 0
    cfg = tiny_config(
        **{
            "selection.method": "adalase",
            **ONE_RUN,
            "train.epochs": 2,
            "adalase.val_batch_size": 40,
            "adalase.every": 2,
        }
    )
    s = Trainer(cfg).run()
    steps = 2 * 4  # ceil(100 / 32) steps per epoch; a hypergradient on steps 0, 2, 4, 6
    assert s["cost"]["sample_passes"] == 2 * 100 + (steps // 2) * 40
    assert s["cost"]["adalase_s"] > 0
    assert s["history"][-1]["cost/sample_passes"] == s["cost"]["sample_passes"]


def test_window_credit_feeds_every_step_and_never_crosses_an_epoch():
    cfg = tiny_config(
        **{
            "selection.method": "adalase",
            **ONE_RUN,
            "train.epochs": 2,
            "adalase.val_batch_size": 40,
            "adalase.every": 3,
            "adalase.credit": "window",
        }
    )
    tr = Trainer(cfg)
    fed = []
    observe = tr.policy.observe
    tr.policy.observe = lambda site, dot: (fed.append((tr.step, site)), observe(site, dot))
    s = tr.run()
    # 4 steps per epoch: windows {0,1,2} and {3} (the epoch's end), then {4,5} and {6,7}
    assert [step for step, _ in fed] == [2, 2, 2, 3, 5, 5, 7, 7]
    assert tr.policy.horizon == 8 and not tr.hypergradient.window
    assert s["cost"]["sample_passes"] == 2 * 100 + 4 * 40


def test_reuse_credit_feeds_every_step_with_one_fresh_pseudo_validation_gradient_per_every_steps():
    cfg = tiny_config(
        **{
            "selection.method": "adalase",
            **ONE_RUN,
            "train.epochs": 2,
            "adalase.val_batch_size": 40,
            "adalase.every": 3,
            "adalase.credit": "reuse",
        }
    )
    tr = Trainer(cfg)
    fed, fresh = [], []
    observe, gradient = tr.policy.observe, tr.pseudo_val.gradient
    tr.policy.observe = lambda site, dot: (fed.append(tr.step), observe(site, dot))
    tr.pseudo_val.gradient = lambda *a: (fresh.append(tr.step), gradient(*a))[1]
    s = tr.run()
    assert fed == list(range(8)) and fresh == [0, 3, 6]  # the g_val of step 3 also serves steps 4 and 5
    assert tr.policy.horizon == 8 and s["cost"]["sample_passes"] == 2 * 100 + 3 * 40


def test_summary_selects_on_val_and_reports_test_there():
    s = Trainer(tiny_config(**{"selection.method": "adalase", **ONE_RUN, "train.epochs": 4})).run()
    h = s["history"]
    best = max(range(4), key=lambda i: (h[i]["val/acc"], -i))
    assert s["best_val_acc"] == h[best]["val/acc"]
    assert s["test_acc_at_best_val"] == h[best]["test/acc"]
    assert s["final_test_acc"] == h[-1]["test/acc"]
    assert s["sites"] == ["input", "stage1", "stage2", "stage3", "stage4"]
    assert len(s["q_history"]) == 4 and len(s["q_final"]) == 5
    assert sum(s["q_final"]) == pytest.approx(1.0)
    assert s["cost"]["device"] == "cpu"
    assert s["config"]["selection"]["method"] == "adalase"
    for key in ("train/loss", "val/loss", "val/acc", "test/acc", "adalase/q/stage2", "cost/sample_passes"):
        assert key in h[0]


def test_adalase_learns_on_digits_and_q_leaves_uniform():
    s = Trainer(
        tiny_config(
            **{"selection.method": "adalase", "train.epochs": 5, "data.n_train": 300, "model.width": 8, "train.lr": 0.1}
        )
    ).run()
    assert s["best_val_acc"] > 0.8
    assert s["q_movement"]["max_dev"] > 0.1 and s["q_movement"]["kl"] > 0.01
    # the summary's q_movement is the probe's learned q; the retrain's epochs report the q they run with
    probe_end = [m for m in s["history"] if m["phase"] == 1][-1]
    assert probe_end["adalase/q_max_dev"] == s["q_movement"]["max_dev"]
    assert s["history"][-1]["adalase/q_max_dev"] == pytest.approx(q_movement(s["q_retrain"])["max_dev"])


@pytest.mark.parametrize("source", ["train", "holdout"])
def test_pseudo_validation_never_leaves_the_runs_training_subset(source):
    cfg = tiny_config(**{"selection.method": "adalase", "data.n_train": 30, "adalase.val_source": source})
    subset = set(build_data(cfg.data).for_seed(cfg.subset_seed()).train.ids.tolist())  # the run seed's subset
    tr = Trainer(cfg)
    trained = set(tr.data.train.ids.tolist())
    forbidden = set(tr.data.test.ids) | set(tr.data.val.ids)
    allowed = subset if source == "train" else subset - trained  # holdout: the held-out part only
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(20):
        tr.pseudo_val.new_epoch(rng)
        ids = set(tr.pseudo_val.ids.tolist())
        assert ids <= allowed and not ids & forbidden
        seen |= ids
    if source == "train":
        assert trained == subset and tr.pseudo_val.batch_size == 30  # 8 x 32 capped at the 30-sample subset
    else:  # 20% of the subset, stratified, is never trained on and is the whole pool
        assert len(trained) == 24 and seen == subset - trained and len(seen) == 6
        assert tr.summary()["splits"] == {
            "train": 24,
            "val": len(tr.data.val),
            "test": len(tr.data.test),
            "pseudo_val_pool": 6,
            "pseudo_val_batch": 6,
        }


def test_holdout_that_leaves_nothing_is_refused_before_training():
    cfg = tiny_config(
        **{
            "selection.method": "adalase",
            "data.n_train": 10,
            "adalase.val_source": "holdout",
            "adalase.holdout_fraction": 0.01,
        }
    )
    with pytest.raises(ConfigError, match=r"adalase.holdout_fraction = 0.01: holds out 0 of the 10"):
        Trainer(cfg)


def test_pseudo_val_batch_is_the_presets_multiple_of_the_mean_train_batch_capped_at_the_subset():
    faithful = {"selection.method": "adalase", **ONE_RUN, "adalase.preset": "faithful"}
    tr = Trainer(tiny_config(**faithful, **{"data.n_train": 320, "train.batch_size": 16}))
    assert tr.pseudo_val.batch_size == 128  # 8 x 16: the paper's 1024 for 128
    tr = Trainer(tiny_config(**faithful, **{"data.n_train": 50}))
    assert tr.pseudo_val.batch_size == 50  # capped at the subset
    tr = Trainer(tiny_config(**{"selection.method": "adalase", **ONE_RUN, "data.n_train": 320, "train.batch_size": 16}))
    assert tr.pseudo_val.batch_size == 32  # fast: 2x
    tr = Trainer(tiny_config(**{"selection.method": "adalase", **ONE_RUN, "data.n_train": 50, "train.batch_size": 8}))
    assert tr.pseudo_val.batch_size == 14  # 2 x 50/7: 7 batches of mean size 7.14, so passes stay 1.2x


def test_a_diverging_run_stops_with_a_clear_error():
    tr = Trainer(
        tiny_config(**{"train.lr": 90.0, "train.weight_decay": 0.9, "train.epochs": 3, "model.name": "mlp"})
    )  # no BatchNorm to save it
    with pytest.raises(NonFiniteError, match=r"not finite in epoch \d.*training diverged; lower train.lr \(now 90.0\)"):
        tr.run()


def test_non_finite_weights_fail_even_when_the_losses_look_finite():
    tr = Trainer(tiny_config(**{"train.epochs": 2}))
    tr.run_epoch()
    with torch.no_grad():
        next(tr.model.parameters())[0] = float("inf")  # e.g. an overflow in a layer the loss does not reach yet
    tr.model.eval()
    with pytest.raises(NonFiniteError, match="not finite"):
        tr._check_finite({"epoch": 2, "train/loss": 1.0, "val/loss": 1.0, "test/loss": 1.0})


def test_callbacks_see_every_epoch_a_loadable_state_and_the_end(tmp_path):
    seen = []

    class Recorder(Callback):
        def on_train_start(self, trainer):
            seen.append("start")

        def on_epoch_end(self, trainer, metrics):
            atomic_save(trainer.state_dict(), tmp_path / "s.pt")
            seen.append((metrics["epoch"], safe_load(tmp_path / "s.pt")["epoch"], metrics["best_epoch"]))

        def on_train_end(self, trainer, summary):
            seen.append(("end", summary["epochs"]))

        def on_exception(self, trainer, error):
            seen.append(type(error).__name__)

    Trainer(tiny_config(**{"train.epochs": 3}), callbacks=[Recorder()]).run()
    assert seen[0] == "start" and seen[-1] == ("end", 3) and [s[:2] for s in seen[1:-1]] == [(1, 1), (2, 2), (3, 3)]
    seen.clear()
    with pytest.raises(NonFiniteError):
        Trainer(
            tiny_config(**{"train.lr": 90.0, "train.weight_decay": 0.9, "model.name": "mlp", "train.epochs": 3}),
            callbacks=[Recorder()],
        ).run()
    assert seen[-1] == "NonFiniteError"


def test_cost_meter_excludes_inner_phases_from_outer_ones():
    meter = CostMeter(torch.device("cpu"))
    with meter.measure("train_s"):
        time.sleep(0.05)
        with meter.measure("adalase_s"):
            time.sleep(0.1)
    assert 0.04 < meter.seconds["train_s"] < 0.09 and 0.09 < meter.seconds["adalase_s"] < 0.2


def test_history_selects_the_first_epoch_with_the_best_val_accuracy():
    h = History([{"epoch": 1, "val/acc": 0.5}, {"epoch": 2, "val/acc": 0.7}, {"epoch": 3, "val/acc": 0.7}])
    assert h.best()["epoch"] == 2 and History().best() is None


def test_presets_set_the_cost_settings_and_explicit_values_win():
    tr = Trainer(
        tiny_config(**{"selection.method": "adalase", **ONE_RUN, "adalase.preset": "fast", "data.n_train": 320})
    )
    assert tr.hypergradient.every == 10 and tr.pseudo_val.batch_size == 64
    assert tr.hypergradient.credit == "reuse" and tr.policy.form == "normalized"
    tr = Trainer(
        tiny_config(**{"selection.method": "adalase", **ONE_RUN, "data.n_train": 320, "adalase.preset": "faithful"})
    )
    assert tr.hypergradient.every == 1 and tr.pseudo_val.batch_size == 8 * 32 and tr.hypergradient.credit == "step"
    assert tr.policy.form == "raw" and tr.policy.eta == 0.01
    tr = Trainer(tiny_config(**{"selection.method": "adalase", **ONE_RUN, "data.n_train": None}))
    assert tr.hypergradient.every == 10 and tr.policy.form == "normalized"  # fast by default
    tr = Trainer(
        tiny_config(**{"selection.method": "adalase", **ONE_RUN, "adalase.preset": "fast", "adalase.every": 3})
    )
    assert tr.hypergradient.every == 3


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adalase_under_adam_in_the_trainer_moves_q_and_resumes_exactly(tmp_path, optimizer):
    cfg = tiny_config(
        **{"selection.method": "adalase", **ONE_RUN, "train.optimizer": optimizer, "train.lr": 0.003, "train.epochs": 3}
    )
    full = Trainer(cfg).run()
    first = Trainer(cfg)
    assert type(first.optimizer) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    first.run_epoch()
    atomic_save(first.state_dict(), tmp_path / "last.pt")
    resumed = Trainer(cfg)
    resumed.load_state_dict(safe_load(tmp_path / "last.pt"))
    assert _untimed(resumed.run()["history"]) == _untimed(full["history"])
    assert max(full["q_final"]) > 0.3  # q moved from uniform (0.2) under Adam's step
