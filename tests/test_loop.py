"""The AdaLASE object in a user's own loop: the hypergradient through the optimizer's actual step
(finite differences for SGD with momentum and Adam), the same q as the built-in Trainer in a
plain loop and under a Lightning Trainer, sites by module name, and its errors."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from adalase_tune import AdaLASE, ConfigError, Trainer, hold_out, mixed_loss
from adalase_tune.loop import generators, soft_cross_entropy

from conftest import tiny_config

# --- the hypergradient through the optimizer's step -------------------------------------------


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(seed, n=24):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


OPTIMIZERS = {
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "sgd_momentum_dampening": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, dampening=0.3),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
}


def _hypergradient_vs_finite_difference(make_opt, direction="step"):
    """After 3 warm-up steps (momentum buffers and Adam moments non-zero), one step of the object
    at site 2; returns (its hypergradient times -lr, the finite difference of
    L_val(theta_{t+1}) along this step's gradient, i.e. in q of the sampled site)."""
    model = _net()
    opt = make_opt(model.parameters())
    xv, yv = _batch(99, 40)
    ada = AdaLASE(
        model, opt, sites=["1", "3"], val=(xv, yv), epochs=1, steps_per_epoch=10, preset="faithful",
        settings={"adalase.val_batch_size": 40, "adalase.eta": 0.0}, direction=direction,
    )  # fmt: skip
    seen = []
    ada.policy.observe = lambda arm, d: seen.append(d)
    for k in range(3):
        x, y = _batch(k)
        opt.zero_grad()
        ada.loss(x, y).backward()
        ada.step()
    x, y = _batch(7)
    opt.zero_grad()
    mixed_loss(model(x), y).backward()  # the gradient of the sampled site's loss (no DA: a function of theta)
    ada.arm = 2
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    lr = opt.param_groups[0]["lr"]
    ada.step()
    hyper = -lr * seen[-1]

    def val_after_step(eps):
        model.load_state_dict(saved_model)
        opt.load_state_dict(copy.deepcopy(saved_opt))
        for p, g in zip(model.parameters(), grads):
            p.grad = g * (1 + eps)  # d/dq_l of sum_k q_k g_k is g_l
        opt.step()
        with torch.no_grad():
            return soft_cross_entropy(model(xv), nn.functional.one_hot(yv, 3).double()).item()

    eps = 1e-6
    return hyper, (val_after_step(eps) - val_after_step(-eps)) / (2 * eps)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_hypergradient_is_the_derivative_through_the_optimizers_actual_step(name):
    hyper, fd = _hypergradient_vs_finite_difference(OPTIMIZERS[name])
    assert abs(fd) > 1e-7
    assert hyper == pytest.approx(fd, rel=1e-5)


def test_the_raw_gradient_is_not_the_derivative_under_adam():
    """The check has teeth: the paper's J = I misses the derivative under Adam by more than 1000x
    the tolerance the step's own Jacobian meets (measured: 5.6%)."""
    hyper, fd = _hypergradient_vs_finite_difference(OPTIMIZERS["adam_l2"], direction="gradient")
    assert abs(hyper - fd) > 1e-2 * abs(fd)


# --- the same q as the built-in Trainer ----------------------------------------------------------

SAME = {"selection.method": "adalase", "adalase.retrain": False, "adalase.val_source": "holdout",
        "adalase.val_batch_size": 16, "train.epochs": 3}  # fmt: skip


def _trainer_and_user_parts():
    """The built-in Trainer's run, and what a user would hand their own loop for the same one:
    the model at its initialisation, the training samples, the held-out pseudo-validation pool."""
    cfg = tiny_config(**SAME)
    tr = Trainer(cfg)
    model = copy.deepcopy(tr.model)
    train, pool = tr.data.train, tr.pseudo_val.split
    assert not tr.data.input_augment  # digits: no input augmentation, so a plain loop needs none
    return cfg, tr, model, (train.x, train.y), (pool.x, pool.y)


def _sgd(model, cfg, total_steps):
    t = cfg.train
    opt = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    )
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, cosine)


def _orders(cfg, n):
    """The Trainer's data order (the user's loader would have its own; here it must be the same)."""
    rng = generators(cfg.train.seed, "cpu")[0]["data"]
    return [rng.permutation(n) for _ in range(cfg.train.epochs)]


def test_a_plain_loop_learns_the_same_q_as_the_built_in_trainer():
    cfg, tr, model, (x, y), val = _trainer_and_user_parts()
    expected = tr.run()["q_history"]
    steps = math.ceil(len(y) / cfg.train.batch_size)
    opt, sched = _sgd(model, cfg, cfg.train.epochs * steps)
    ada = AdaLASE(model, opt, val=val, epochs=cfg.train.epochs, steps_per_epoch=steps, seed=cfg.train.seed,
                  settings={"adalase.val_batch_size": 16})  # fmt: skip
    for order in _orders(cfg, len(y)):
        model.train()
        for start in range(0, len(y), cfg.train.batch_size):
            idx = torch.as_tensor(order[start : start + cfg.train.batch_size])
            opt.zero_grad(set_to_none=True)
            ada.loss(x[idx], y[idx]).backward()
            ada.step()
            sched.step()
    assert ada.q_history == expected
    assert max(expected[-1]) > 0.4  # q moved: the equality is not that of two uniform runs
    assert ada.cost["train_passes"] == cfg.train.epochs * len(y)
    assert ada.cost["pseudo_val_passes"] == 16 * math.ceil(cfg.train.epochs * steps / 10)  # fast: every 10 steps


def test_a_lightning_trainer_learns_the_same_q_with_the_callback():
    L = pytest.importorskip("lightning.pytorch")
    from adalase_tune.lightning import AdaLASECallback

    cfg, tr, model, (x, y), val = _trainer_and_user_parts()
    expected = tr.run()["q_history"]
    steps = math.ceil(len(y) / cfg.train.batch_size)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return mixed_loss(self(xb), yb)  # the one line a training_step changes

        def configure_optimizers(self):
            opt, sched = _sgd(self.net, cfg, cfg.train.epochs * steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class Batches(torch.utils.data.Sampler):
        def __init__(self):
            self.orders = iter(_orders(cfg, len(y)))

        def __iter__(self):
            order = next(self.orders)
            return iter([order[s : s + cfg.train.batch_size].tolist() for s in range(0, len(y), cfg.train.batch_size)])

        def __len__(self):
            return steps

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_sampler=Batches())
    callback = AdaLASECallback(val=val, seed=cfg.train.seed, settings={"adalase.val_batch_size": 16})
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        callbacks=[callback],
    )  # fmt: skip
    trainer.fit(Module(), loader)
    assert callback.ada is not None
    np.testing.assert_allclose(callback.ada.q_history, expected, rtol=0, atol=1e-9)
    assert max(expected[-1]) > 0.4


# --- sites by module name, sources, state, errors ----------------------------------------------


def test_sites_by_module_name_on_a_torchvision_resnet18_and_a_loader_source():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    data = torch.utils.data.TensorDataset(torch.randn(24, 3, 32, 32), torch.randint(0, 4, (24,)))
    train, val = hold_out(data, 0.25, seed=1)
    loader = torch.utils.data.DataLoader(train, batch_size=6, shuffle=True)
    ada = AdaLASE(net, opt, sites=["layer1", "layer2", "layer3", "layer4"], op="cutmix",
                  val=torch.utils.data.DataLoader(val, batch_size=6), epochs=2, steps_per_epoch=len(loader),
                  settings={"adalase.every": 1})  # fmt: skip
    assert ada.arm_names == ["input", "layer1", "layer2", "layer3", "layer4"]
    for _ in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            ada.loss(xb, yb).backward()
            ada.step()
    assert ada.steps == 6 and len(ada.q_history) == 2
    assert not np.allclose(ada.q, 0.2)  # every step gave a hypergradient: q moved
    assert ada.cost["pseudo_val_passes"] == 6 * 6 and ada.cost["plain_run_multiple"] == pytest.approx(2.0)


def test_state_dict_resumes_a_loop_exactly():
    def run(split_after=None):
        model = _net().float()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        xv, yv = _batch(99, 40)
        make = lambda m, o: AdaLASE(m, o, sites=["1", "3"], val=(xv.float(), yv), epochs=2, steps_per_epoch=4,
                                    settings={"adalase.every": 2})  # fmt: skip
        ada = make(model, opt)
        for k in range(8):
            if k == split_after:
                saved = copy.deepcopy((model.state_dict(), opt.state_dict(), ada.state_dict()))
                model = _net().float()
                opt = torch.optim.Adam(model.parameters(), lr=0.01)
                ada = make(model, opt)
                model.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
                ada.load_state_dict(saved[2])
            x, y = _batch(k)
            opt.zero_grad()
            ada.loss(x.float(), y).backward()
            ada.step()
        return ada.q_history

    whole = run()
    assert run(split_after=5) == whole and not np.allclose(whole[-1], 1 / 3)


def test_bad_arguments_fail_with_the_field_and_the_fix():
    model = _net()
    xv, yv = _batch(1)
    with pytest.raises(ConfigError, match=r"optimizer = RMSprop.*direction='gradient'"):
        AdaLASE(model, torch.optim.RMSprop(model.parameters()), sites=["1"], val=(xv, yv), epochs=1, steps_per_epoch=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="val = None"):
        AdaLASE(model, opt, sites=["1"], epochs=1, steps_per_epoch=1)
    with pytest.raises(ConfigError, match=r"sites \['layer9'\]: no such submodules"):
        AdaLASE(model, opt, sites=["layer9"], val=(xv, yv), epochs=1, steps_per_epoch=1)
    with pytest.raises(ConfigError, match="sites = None, but Sequential has no Site modules"):
        AdaLASE(_net(), opt, val=(xv, yv), epochs=1, steps_per_epoch=1)  # a model nothing hooked yet
    with pytest.raises(ConfigError, match="settings key 'train.lr'"):
        AdaLASE(model, opt, sites=["1"], val=(xv, yv), epochs=1, steps_per_epoch=1, settings={"train.lr": 1})
    with pytest.raises(ConfigError, match="adalase.preset = 'quick'"):
        AdaLASE(model, opt, sites=["1"], val=(xv, yv), epochs=1, steps_per_epoch=1, preset="quick")
    with pytest.raises(ConfigError, match="maximize"):
        AdaLASE(model, torch.optim.SGD(model.parameters(), lr=0.1, maximize=True), sites=["1"], val=(xv, yv),
                epochs=1, steps_per_epoch=1)  # fmt: skip
    with pytest.raises(ConfigError, match="fraction = 1.5"):
        hold_out(torch.utils.data.TensorDataset(xv, yv), 1.5)
    uniform = AdaLASE(model, opt, sites=["1"], selection="uniform", epochs=1, steps_per_epoch=1)  # no val needed
    assert uniform.hypergradient is None and uniform.q.tolist() == [0.5, 0.5]


def test_sites_are_hooked_once_per_model():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xv, yv = _batch(1)
    first = AdaLASE(model, opt, sites=["1"], val=(xv, yv), epochs=1, steps_per_epoch=1)
    again = AdaLASE(model, opt, sites=["1"], selection="probs", settings={"selection.weights": list(first.q)},
                    epochs=1, steps_per_epoch=1)  # fmt: skip
    seen = []
    ctx = again.context(len(yv))
    ctx.visit = lambda index, name, h: seen.append(name) or h  # type: ignore[method-assign]
    with ctx:
        model(xv)
    assert seen == ["input", "1"]  # one hook per site, not two
    with pytest.raises(ConfigError, match=r"already has DA sites \['input', '1'\]"):
        AdaLASE(model, opt, sites=["3"], val=(xv, yv), epochs=1, steps_per_epoch=1)
