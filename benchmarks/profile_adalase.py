"""Where AdaLASE's extra time per step goes: the main job's regime (an MLP on motifs, batch 8, the
default `fast` preset in its one-run form) against `uniform`, under cProfile (the Python functions
of adalase_tune) and torch.profiler (the tensor ops), in one process, one torch thread.

    python benchmarks/profile_adalase.py
    python benchmarks/profile_adalase.py --smoke-test
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch
from torch.profiler import ProfilerActivity, profile

from adalase_tune.config import from_dict
from adalase_tune.engine import Trainer

from _common import write_result


def config(method: str, epochs: int):
    return from_dict(
        {
            "data": {"name": "motifs", "n_train": 200},
            "model": {"name": "mlp", "hidden": [256, 256]},
            "augment": {"op": "translate"},
            "selection": {"method": method},
            "adalase": {"retrain": False, "val_source": "train"},  # the one-run form: AdaLASE's step itself
            "train": {"batch_size": 8, "lr": 0.05, "epochs": epochs, "device": "cpu", "threads": 1},
        }
    )


def timed(method: str, epochs: int) -> tuple[float, dict]:
    """Seconds of training per epoch, and cProfile's own time per adalase_tune function, of the
    run alone (its data and model are built before the profiler starts)."""
    trainer = Trainer(config(method, epochs))
    prof = cProfile.Profile()
    prof.enable()
    summary = trainer.run()
    prof.disable()
    cost = summary["cost"]
    own: dict = {}
    for (path, line, name), (_, calls, tt, _, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        if "adalase_tune" in path:
            own[f"{path.split('adalase_tune/')[-1]}:{line} {name}"] = (calls, tt)
    return (cost["train_s"] + cost["adalase_s"]) / summary["epochs"], own


def op_times(method: str, epochs: int) -> dict:
    """torch.profiler's self CPU time (s) and calls per tensor op, of the run alone."""
    trainer = Trainer(config(method, epochs))
    with profile(activities=[ProfilerActivity.CPU]) as ops:
        trainer.run()
    return {e.key: (e.count, e.self_cpu_time_total / 1e6) for e in ops.key_averages()}


def extra(ada: dict, plain: dict, top: int) -> list[tuple[str, int, int, float]]:
    """What the adalase run spends beyond uniform's, per name: (name, calls, uniform's calls, extra s)."""
    rows = [(k, c, plain.get(k, (0, 0.0))[0], t - plain.get(k, (0, 0.0))[1]) for k, (c, t) in ada.items()]
    return sorted(rows, key=lambda r: -r[3])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    epochs = 2 if args.smoke_test else args.epochs
    torch.set_num_threads(1)
    timed("uniform", 1)  # warm-up: first calls, allocator
    plain, plain_own = timed("uniform", epochs)
    ada, ada_own = timed("adalase", epochs)
    plain_ops, ada_ops = op_times("uniform", epochs), op_times("adalase", epochs)
    total = {m: sum(t for _, t in o.values()) for m, o in (("uniform", plain_ops), ("adalase", ada_ops))}
    table = lambda rows: "".join(f"| `{n}` | {c} | {u} | {t * 1e3:.1f} |\n" for n, c, u, t in rows)  # noqa: E731
    body = (
        f"MLP [256, 256] on motifs (200 samples, batch 8, translate), {epochs} epochs, CPU, one torch thread; "
        "adalase is the default `fast` preset in its one-run form (AdaLASE's step itself). Training time per epoch "
        "(training + AdaLASE's extra work, evaluation excluded), under cProfile, which slows Python-heavy code "
        "in both runs alike; the tables give what the adalase run spends beyond uniform's, per name.\n\n"
        f"| run | s / epoch (cProfile on) | × uniform | tensor ops' self CPU, whole run (torch.profiler) |\n"
        f"|---|---|---|---|\n| uniform | {plain:.4f} | 1.00 | {total['uniform']:.3f} s |\n"
        f"| adalase (fast) | {ada:.4f} | {ada / plain:.2f} | {total['adalase']:.3f} s |\n\n"
        "adalase_tune's Python functions, own time beyond uniform's (cProfile):\n\n"
        "| function | calls | uniform's calls | extra ms |\n|---|---|---|---|\n"
        + table(extra(ada_own, plain_own, 12))
        + "\nTensor ops, self CPU time beyond uniform's (torch.profiler):\n\n"
        "| op | calls | uniform's calls | extra ms |\n|---|---|---|---|\n" + table(extra(ada_ops, plain_ops, 15))
    )
    print(body)
    print(f"wrote {write_result('profile_adalase', 'Where AdaLASE step time goes (profile)', body, args.smoke_test)}")


if __name__ == "__main__":
    main()
