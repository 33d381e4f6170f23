"""Latent DA ops, looked up by name (``augment.op``): mixup, cutmix, cutout, translate, noise."""

from typing import Optional

from ..registry import Registry
from ._base import Op
from ._cutmix import CutMix
from ._cutout import Cutout
from ._mixup import Mixup
from ._noise import Noise
from ._translate import Translate

OPS: Registry[type[Op]] = Registry("augment.op")
for _cls in (Mixup, CutMix, Cutout, Translate, Noise):
    OPS.register(_cls.name)(_cls)


def get_op(name: str, strength: Optional[float] = None) -> Op:
    """Build the op called ``name`` (see ``OPS.names()``) with its strength or default."""
    return OPS.get(name)(strength)


__all__ = ["OPS", "Op", "get_op"]
