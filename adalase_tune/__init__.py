"""adalase_tune: learn where to apply latent data augmentation (AdaLASE), at cluster scale.

The public surface: the library API (one function per command; docs/api.md) and the engine::

    from adalase_tune import load_config, run_benchmark, sweep, train, Trainer
    summary = train(load_config("search_spaces/motifs.yaml", ["selection.method=adalase"]), tracking_uri=None)
    result = run_benchmark(load_config("search_spaces/motifs.yaml"), methods=["adalase", "grid"],
                           out="results/mini", experiment="motifs")

Names are imported on first use: ``import adalase_tune`` is cheap, so that the command line can
install its signal handlers before torch loads, and a Ray trial does not load the orchestration.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "config": ("ConfigError", "ExperimentConfig", "SweepConfig", "load_config", "load_sweep"),
    "data": ("build_data",),
    "engine": ("Callback", "NonFiniteError", "NonFiniteLossError", "Trainer"),
    "loop": ("AdaLASE", "hold_out", "mixed_loss"),
    "experiment": ("Interrupted", "TrialsFailed", "rebuild_report", "run_benchmark", "sweep", "train"),
    "models": ("MODELS", "build_model"),
    "ops": ("OPS", "get_op"),
    "policies": ("POLICIES", "build_policy"),
    "sites": ("DAContext", "Site", "SiteInfo", "attach_sites"),
    "tuning": ("SweepOptions", "search_space", "tune_config", "tune_trainable"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module 'adalase_tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
