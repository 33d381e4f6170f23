"""AdaLASE's cost per epoch, as a ratio to ``uniform`` on the same model and data, for the
faithful setting and each cheaper one; and the engine's throughput against a minimal
hand-written PyTorch loop (same model, data, batch order, the op at a random site).

    python benchmarks/overhead.py              # cnn + mlp on digits, resnet18 on CIFAR-shaped tensors
    python benchmarks/overhead.py --smoke-test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adalase_tune.config import from_dict
from adalase_tune.data import build_data
from adalase_tune.engine import Trainer, pick_device
from adalase_tune.models import build_model

from _common import synthetic_cifar, write_result

SETTINGS = {  # name: adalase overrides
    "fast (the default: normalized, fresh g_val every 10 steps reused between, val batch 2x)": {},
    "faithful (raw, every step, val batch 8x)": {"adalase.preset": "faithful"},
    "normalized (every step, val batch 8x)": {"adalase.preset": "normalized"},
    "fast with step credit (one hypergradient per 10 steps)": {"adalase.credit": "step"},
    "fast with window credit": {"adalase.credit": "window"},
}


def workloads(smoke: bool, tmp: Path) -> dict:
    digits = {
        "data": {"name": "digits", "n_train": 200 if smoke else None},
        "train": {"batch_size": 64, "lr": 0.05, "epochs": 1 if smoke else 10, "device": "auto"},
    }
    motifs = {
        "data": {"name": "motifs", "n_train": 64 if smoke else 200},
        "model": {"name": "mlp", "hidden": [256, 256]},
        "augment": {"op": "translate"},
        "train": {"batch_size": 8, "lr": 0.05, "epochs": 1 if smoke else 40, "device": "auto"},
    }
    cifar = {
        "data": {
            "name": "npz",
            "path": synthetic_cifar(tmp / "cifar_like.npz", 32 if smoke else 256),
            "input_augment": True,
        },
        "train": {"batch_size": 32, "lr": 0.05, "epochs": 1, "device": "auto"},
    }
    return {
        "mlp / motifs (the main job's regime)": motifs,
        "cnn / digits": {**digits, "model": {"name": "cnn", "width": 16}},
        "mlp / digits": {**digits, "model": {"name": "mlp", "hidden": [1000]}},
        "resnet18 / CIFAR-shaped": {**cifar, "model": {"name": "resnet18", "stem": "cifar"}},
    }


def run(tree: dict, selection: str, extra: dict) -> dict:
    # the one-run form: this measures the cost of AdaLASE's step against a plain step
    cfg = from_dict({**tree, "selection": {"method": selection}, "adalase": {"retrain": False, "val_source": "train"}})
    cfg = cfg.replace(**{"train.threads": torch.get_num_threads(), **extra})  # the Trainer sets the config's
    s = Trainer(cfg).run()
    c = s["cost"]
    return {
        "epoch_s": (c["train_s"] + c["adalase_s"]) / s["epochs"],
        "passes": c["sample_passes"] / s["epochs"],
        "val_acc": s["best_val_acc"],
    }


def hand_loop(tree: dict) -> float:
    """A minimal PyTorch loop: the same model, batches, SGD and mixup at a uniformly drawn site
    (by the same Site modules), with none of the engine's bookkeeping. Returns seconds per epoch."""
    from adalase_tune.ops import get_op
    from adalase_tune.sites import DAContext

    cfg = from_dict({**tree, "selection": {"method": "uniform"}})
    device = pick_device(cfg.train.device)
    data = build_data(cfg.data).to(device)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rng, op, k = np.random.default_rng(0), get_op(cfg.augment.op, cfg.augment.strength), len(model.da_sites)
    x_all, y_all = data.train.x, data.train.y
    start = time.perf_counter()
    for _ in range(cfg.train.epochs):
        order = torch.as_tensor(rng.permutation(len(y_all)), device=device)
        for i in range(0, len(order), cfg.train.batch_size):
            idx = order[i : i + cfg.train.batch_size]
            x, y = x_all[idx], F.one_hot(y_all[idx], data.num_classes).float()
            with DAContext(int(rng.integers(k)), op, rng) as ctx:
                logits = model(x)
            loss = -(ctx.mix_targets(y) * F.log_softmax(logits, 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / cfg.train.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.smoke_test else args.repeats
    device = pick_device("auto")
    lines = [
        f"Device: {device}. Per-epoch training wall time (training + AdaLASE's extra work, evaluation "
        f"excluded), median of {repeats} runs (1 for resnet18 on CPU); torch threads {args.threads}. Ratios are "
        "to `uniform` measured in the same run, interleaved with it. Sample passes count every per-sample "
        "forward and backward pass, the pseudo-validation batches included.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in workloads(args.smoke_test, Path(tmp)).items():
            run(tree, "uniform", {}), hand_loop(tree)  # warm-up: first-call allocations and kernel selection
            reps = 1 if "resnet" in name and pick_device("auto").type == "cpu" else repeats  # minutes per run on CPU
            runs = {"uniform": [], **{label: [] for label in SETTINGS}}
            for _ in range(reps):  # interleaved: every setting sees the same machine state
                runs["uniform"].append(run(tree, "uniform", {}))
                for label, extra in SETTINGS.items():
                    runs[label].append(run(tree, "adalase", extra))
            base = runs["uniform"]
            base_s = statistics.median(r["epoch_s"] for r in base)
            lines += [
                f"## {name}",
                "",
                "| setting | s / epoch | × uniform (time) | × uniform (sample passes) | best val acc |",
                "|---|---|---|---|---|",
                f"| uniform | {base_s:.3f} | 1.00 | 1.00 | {base[0]['val_acc']:.4f} |",
            ]
            for label in SETTINGS:
                rs = runs[label]
                t = statistics.median(r["epoch_s"] for r in rs)
                lines.append(
                    f"| adalase, {label} | {t:.3f} | {t / base_s:.2f} | {rs[0]['passes'] / base[0]['passes']:.2f} "
                    f"| {rs[0]['val_acc']:.4f} |"
                )
            hand = statistics.median(hand_loop(tree) for _ in range(reps))
            lines += [
                "",
                f"Engine throughput under `uniform` against a minimal hand-written loop: "
                f"**{hand / base_s:.2f}** (hand-written s/epoch {hand:.3f} / engine {base_s:.3f}; "
                "≥ 1.0 means the engine is as fast).",
                "",
            ]
            print("\n".join(lines[-12:]), flush=True)
    if device.type != "cuda":
        lines.append("This run had no GPU; `overhead_gpu.md` holds the same benchmark on an NVIDIA H200.")
    path = write_result("overhead", "AdaLASE overhead per epoch", "\n".join(lines) + "\n", args.smoke_test)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
