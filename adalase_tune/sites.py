"""DA sites as data, and the per-step context that decides which one augments.

A model publishes its sites (``model.da_sites``: name and per-sample shape, input first). A
:class:`Site` module is an exact identity unless the step's :class:`DAContext` selected it;
the model's ``forward`` knows nothing about training. The loss reads the same context to mix
the targets (docs/algorithm.md).

Example::

    ctx = DAContext(site=2, op=get_op("mixup"), rng=np.random.default_rng(0))
    with ctx:
        logits = model(x)
    loss = soft_cross_entropy(logits, ctx.mix_targets(one_hot(y)))
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

    from .distributed import Draws
    from .ops import Op
    from .ops._base import Mix

_CURRENT: contextvars.ContextVar[Optional[DAContext]] = contextvars.ContextVar("da_context", default=None)


@dataclass(frozen=True)
class SiteInfo:
    """One DA site: its name (``input``, ``layer1``...) and per-sample feature shape."""

    name: str
    shape: tuple[int, ...]


class DAContext:
    """The choice made for one forward pass: which site, which op, and the random source."""

    def __init__(
        self,
        site: Optional[int],
        op: Optional[Op] = None,
        rng: Optional[Draws] = None,
        torch_generator: Optional[torch.Generator] = None,
    ):
        self.site = site
        self.op = op
        self.rng = rng
        self.torch_generator = torch_generator
        self.mix: Mix = None  # (partner index, per-sample weight) once a mixing op ran
        self.applied = False
        self._token: Optional[contextvars.Token[Optional[DAContext]]] = None

    def visit(self, index: int, name: str, h: torch.Tensor) -> torch.Tensor:
        if index != self.site:
            return h
        assert not self.applied, "a DA context applies its op once per forward pass"
        self.applied = True
        assert self.op is not None and self.rng is not None, "a context that selects a site has an op and a generator"
        h, self.mix = self.op(h, self.rng, self.torch_generator)
        return h

    def mix_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Soft targets mixed exactly as the features were (identity for non-mixing ops)."""
        if self.mix is None:
            return y
        partner, lam = self.mix
        lam = lam.to(y.dtype).view(-1, 1)
        return lam * y + (1 - lam) * y[partner]

    def __enter__(self) -> Self:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None, "a DA context is exited once, after it was entered"
        _CURRENT.reset(self._token)
        self._token = None


class _Recorder(DAContext):
    def __init__(self) -> None:
        super().__init__(site=None)
        self.seen: list[SiteInfo] = []

    def visit(self, index: int, name: str, h: torch.Tensor) -> torch.Tensor:
        assert index == len(self.seen), f"site {name} visited out of order (index {index})"
        self.seen.append(SiteInfo(name, tuple(h.shape[1:])))
        return h


def current_context() -> Optional[DAContext]:
    return _CURRENT.get()


class Site(nn.Module):
    """An identity module that lets the current :class:`DAContext` augment its input."""

    def __init__(self, index: int, name: str):
        super().__init__()
        self.index = index
        self.name = name

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        ctx = _CURRENT.get()
        return h if ctx is None else ctx.visit(self.index, self.name, h)

    def extra_repr(self) -> str:
        return f"{self.index}, {self.name!r}"


@torch.no_grad()
def describe_sites(model: nn.Module, example: torch.Tensor) -> list[SiteInfo]:
    """Run ``example`` through ``model`` once and return the sites it visits, in order."""
    was_training = model.training
    model.eval()
    try:
        with _Recorder() as rec:
            model(example)
    finally:
        model.train(was_training)
    return rec.seen


def attach_sites(
    model: nn.Module, module_names: Sequence[str], example: torch.Tensor, include_input: bool = True
) -> list[SiteInfo]:
    """Give any torch model DA sites at the outputs of the named submodules (forward hooks).

    Sets and returns ``model.da_sites``. Example, on a torchvision ViT::

        vit = torchvision.models.vit_b_16(image_size=32)
        blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
        attach_sites(vit, blocks, torch.zeros(1, 3, 32, 32))
    """
    hook_sites(model, module_names, include_input)
    sites = describe_sites(model, example)
    setattr(model, "da_sites", sites)  # noqa: B010 (a plain attribute; nn.Module's typed __setattr__ wants tensors)
    return sites


def hook_sites(model: nn.Module, module_names: Sequence[str], include_input: bool = True) -> list[str]:
    """Hook DA sites onto the outputs of the named submodules (and the input); returns the site
    names in order. :func:`attach_sites` also records their shapes from an example batch.
    Hooking the same names again is a no-op (a second AdaLASE over the same model)."""
    from .config import ConfigError

    modules = dict(model.named_modules())
    missing = [n for n in module_names if n not in modules]
    if missing:
        raise ConfigError(
            f"sites {missing}: no such submodules in {type(model).__name__}; names look like {list(modules)[1:6]}"
        )
    names = (["input"] if include_input else []) + list(module_names)
    hooked = model.__dict__.get("_da_hooks")
    if hooked is not None:
        if hooked != names:
            raise ConfigError(f"sites {list(module_names)}: this model already has DA sites {hooked}; use those")
        return names
    if any(isinstance(m, Site) for m in model.modules()):
        raise ConfigError(
            f"sites {list(module_names)}: {type(model).__name__} already has Site modules; pass sites=None to use them"
        )
    offset = 1 if include_input else 0
    if include_input:

        def input_hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> Optional[tuple[torch.Tensor, ...]]:
            ctx = _CURRENT.get()
            if ctx is None:
                return None
            return (ctx.visit(0, "input", args[0]),) + tuple(args[1:])

        model.register_forward_pre_hook(input_hook)
    for i, name in enumerate(module_names):

        def output_hook(
            module: nn.Module,
            args: tuple[torch.Tensor, ...],
            out: torch.Tensor,
            index: int = i + offset,
            site_name: str = name,
        ) -> Optional[torch.Tensor]:
            ctx = _CURRENT.get()
            return None if ctx is None else ctx.visit(index, site_name, out)

        modules[name].register_forward_hook(output_hook)
    model.__dict__["_da_hooks"] = names
    return names


def sites_of(model: nn.Module) -> list[SiteInfo]:
    """The sites a model publishes (``model.da_sites``, set by ``build_model`` or :func:`attach_sites`)."""
    sites = model.__dict__.get("da_sites")
    if sites is None:
        raise ValueError(f"{type(model).__name__} publishes no DA sites: build it with build_model or attach_sites")
    return sites
