"""Models, looked up by name (``model.name``: a built-in, an entry point or ``module:attr``);
each publishes ``model.da_sites``."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError, ModelConfig, _did_you_mean
from ..registry import Registry
from ..sites import Site, SiteInfo, attach_sites, describe_sites
from ._cnn import SmallCNN
from ._mlp import MLP
from ._resnet import ResNetSites

MODELS: Registry = Registry("model.name", group="adalase_tune.models")
MODELS.register("mlp")(lambda cfg, shape, k: MLP(shape, cfg.hidden, k))
MODELS.register("cnn")(lambda cfg, shape, k: SmallCNN(shape, cfg.width, k))
for _arch in ("resnet18", "resnet34", "resnet50"):
    MODELS.register(_arch)(
        partial(lambda arch, cfg, shape, k: ResNetSites(arch, shape, k, cfg.stem, cfg.pretrained), _arch)
    )
IMAGE_MODELS = ("cnn", "resnet18", "resnet34", "resnet50")  # the built-ins that need (C, H, W) inputs

MODEL_FORMAT = "adalase_tune.model/1"


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``input_shape`` (per sample) and ``num_classes`` outputs.

    ``cfg.name`` is a built-in, an entry point (group ``adalase_tune.models``) or ``module:attr``;
    every builder is called as ``builder(cfg, input_shape, num_classes)`` and returns an
    ``nn.Module``. Its sites are its ``Site`` modules, or the outputs of the submodules named in
    ``cfg.sites`` (plus the input). With ``cfg.checkpoint`` the weights of a model saved by
    :func:`save_model` are loaded, all but a head whose shape differs (transfer learning with a new head).
    """
    builder = MODELS.get(cfg.name)
    if cfg.name in IMAGE_MODELS and len(input_shape) != 3:
        raise ConfigError(
            f"model.name = {cfg.name!r} needs images (C, H, W), but the data are vectors of shape "
            f"{tuple(input_shape)}; use model.name=mlp or a model of your own (docs/extending.md)"
        )
    try:
        model = builder(cfg, tuple(input_shape), num_classes)
    except ConfigError:
        raise
    except Exception as err:  # a builder that cannot make a model for these inputs
        raise ConfigError(
            f"model.name = {cfg.name!r}: building it for inputs of shape {tuple(input_shape)} and {num_classes} "
            f"classes failed ({_one_line(err)}); the builder gets (cfg, input_shape, num_classes)"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name = {cfg.name!r}: the builder returned a {type(model).__name__}, not an nn.Module")
    if cfg.checkpoint:
        load_backbone(model, cfg.checkpoint)
    setattr(model, "da_sites", _sites(cfg, model, torch.zeros(2, *input_shape)))  # noqa: B010
    return model


def _sites(cfg: ModelConfig, model: nn.Module, example: torch.Tensor) -> list[SiteInfo]:
    """The model's own ``Site`` modules, or hooks at the outputs of ``cfg.sites``; one of the two."""
    own = any(isinstance(m, Site) for m in model.modules())
    if cfg.sites is None and not own:
        raise ConfigError(
            f"model.name = {cfg.name!r}: {type(model).__name__} publishes no DA sites; place adalase_tune.Site "
            "modules in its forward pass, or name submodules with model.sites, e.g. [layer1, layer2]"
        )
    if cfg.sites is not None:
        if own:
            raise ConfigError(
                f"model.sites = {list(cfg.sites)}: {cfg.name} already publishes its own sites (Site "
                "modules); drop model.sites"
            )
        modules = [n for n, _ in model.named_modules() if n]
        missing = [n for n in cfg.sites if n not in modules]
        if missing:
            tops = [n for n in modules if "." not in n]
            raise ConfigError(
                f"model.sites = {list(cfg.sites)}: {type(model).__name__} has no submodule {missing[0]!r}"
                f"{_did_you_mean(missing[0], modules)}; its top-level modules are {', '.join(tops[:12])}"
            )
    try:
        if cfg.sites is not None:
            return attach_sites(model, list(cfg.sites), example)
        return describe_sites(model, example)
    except ConfigError:
        raise
    except Exception as err:  # a model that cannot take these inputs
        shape = tuple(example.shape[1:])
        raise ConfigError(
            f"model.name = {cfg.name!r}: a forward pass on inputs of shape {shape} failed ({_one_line(err)}); "
            f"{_input_fix(cfg, model, shape)}"
        ) from None


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def _input_fix(cfg: ModelConfig, model: nn.Module, shape: tuple) -> str:
    """The fix for inputs a model cannot take: for a built-in image model, the smallest side it takes."""
    if 0 in shape:
        return "the samples hold no values; give data with non-empty samples"
    if cfg.name not in IMAGE_MODELS:
        return "the builder gets (cfg, input_shape, num_classes)"
    side = next((s for s in (2, 4, 8, 16, 32, 64) if _takes(model, (shape[0], s, s))), None)
    need = f"images of at least {side}x{side}" if side else "larger images"
    return (
        f"{cfg.name} needs {need}: give larger images (imagefolder: data.image_size), or use model.name=mlp "
        "or a model of your own (docs/extending.md)"
    )


def _takes(model: nn.Module, shape: tuple) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
        return True
    except Exception:
        return False
    finally:
        model.train()


def save_model(model: nn.Module, path: str | Path, config: dict) -> None:
    """Write the weights and the resolved config for later ``model.checkpoint`` use (atomic)."""
    from ..checkpoint import atomic_save

    atomic_save({"format": MODEL_FORMAT, "config": config, "model": model.state_dict()}, path)


def load_backbone(model: nn.Module, path: str | Path) -> list[str]:
    """Load every weight of ``path`` that fits; a head of another shape stays fresh. Returns skipped keys."""
    from ..checkpoint import safe_load

    blob = safe_load(path)
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"model.checkpoint = {str(path)!r}: not a state dict; write one with --save-model")
    own = model.state_dict()
    skipped = [k for k in state if k.startswith("head.") and k in own and own[k].shape != state[k].shape]
    for k in skipped:
        del state[k]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        detail = "; ".join(
            f"{label}: {keys[:3]}"
            for label, keys in (("shape differs", mismatched), ("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise ConfigError(
            f"model.checkpoint = {str(path)!r} does not fit model.name (the same model, input "
            f"shape and width are needed): {detail}"
        )
    model.load_state_dict(state, strict=False)
    return skipped


__all__ = ["MODELS", "build_model", "save_model", "load_backbone"]
