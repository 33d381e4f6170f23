"""bf16 autocast and channels_last behind their switches, exercised on CPU (the same code paths as on
CUDA): `auto` keeps them off on CPU, `true` turns them on on every device; the same seed replays
the same run exactly; results stay close to float32's."""

import pytest
import torch

from adalase_tune.config import ConfigError
from adalase_tune.engine import Trainer

from conftest import tiny_config


def _adalase(**over):
    return tiny_config(**{"selection.method": "adalase", "model.width": 8, "train.epochs": 3, **over})


def _first_conv(model) -> torch.nn.Module:
    """The first convolution with several input channels (with one, the two layouts coincide)."""
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)


def _seen(trainer: Trainer) -> dict:
    """What that convolution receives and returns during training."""
    seen: dict = {}

    def hook(module, args, out):
        seen["in_channels_last"] = args[0].is_contiguous(memory_format=torch.channels_last)
        seen["out_dtype"] = out.dtype

    _first_conv(trainer.model).register_forward_hook(hook)
    return seen


def test_auto_keeps_bf16_and_channels_last_off_on_cpu():
    trainer = Trainer(_adalase())
    seen = _seen(trainer)
    trainer.run()
    assert not trainer.amp and trainer.memory_format is None
    assert seen == {"in_channels_last": False, "out_dtype": torch.float32}


def test_switched_on_the_cpu_trains_in_bf16_channels_last_and_stays_close_to_float32():
    on = Trainer(_adalase(**{"train.amp": True, "train.channels_last": True}))
    assert _first_conv(on.model).weight.is_contiguous(memory_format=torch.channels_last)
    seen = _seen(on)
    low = on.run()
    assert seen == {"in_channels_last": True, "out_dtype": torch.bfloat16}
    full = Trainer(_adalase()).run()
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in low["history"])
    assert low["best_val_acc"] == pytest.approx(full["best_val_acc"], abs=0.1)
    for a, b in zip(low["history"], full["history"]):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=0.01)
    # q moves by normalised hypergradient steps, which bf16's rounding can tip early on: the arm it
    # favours stays, each probability within 0.2 (0.11 at most on an AMD EPYC, 2026-12)
    assert max(range(len(low["q_final"])), key=low["q_final"].__getitem__) == max(
        range(len(full["q_final"])), key=full["q_final"].__getitem__
    )
    assert max(abs(a - b) for a, b in zip(low["q_final"], full["q_final"])) < 0.2


def test_channels_last_alone_changes_only_rounding():
    a = Trainer(_adalase(**{"train.channels_last": True})).run()
    b = Trainer(_adalase()).run()
    for ma, mb in zip(a["history"], b["history"]):
        assert ma["train/loss"] == pytest.approx(mb["train/loss"], abs=1e-3)
        assert ma["val/acc"] == pytest.approx(mb["val/acc"], abs=0.02)


def test_the_same_seed_replays_a_bf16_run_exactly():
    cfg = _adalase(**{"train.amp": True, "train.channels_last": True})
    first, second = Trainer(cfg).run(), Trainer(cfg).run()
    assert first["q_history"] == second["q_history"]
    assert [m["val/loss"] for m in first["history"]] == [m["val/loss"] for m in second["history"]]


def test_a_switch_takes_only_auto_true_or_false():
    with pytest.raises(ConfigError, match=r"train.amp = 'bf16': use auto \(on CUDA only\), true"):
        tiny_config(**{"train.amp": "bf16"})
