"""torchvision ResNets with sites P0..P5 exactly as docs/algorithm.md describes.

P0 input; P1 after conv1+BN+ReLU (+max-pool for the ImageNet stem); P2..P5 after layer1..layer4,
before pooling. ``stem="cifar"`` swaps in a 3x3 stride-1 conv and drops the max-pool.
"""

import warnings
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from ..config import ConfigError
from ..sites import Site


class ResNetSites(nn.Module):
    """A torchvision ResNet re-wired so that its stages are separated by :class:`Site` modules."""

    def __init__(
        self,
        arch: str,
        input_shape: Sequence[int],
        num_classes: int = 10,
        stem: str = "cifar",
        pretrained: Optional[str] = None,
    ):
        super().__init__()
        import torchvision  # here, not at import: it costs about a second, and most models do not need it

        try:
            net = getattr(torchvision.models, arch)(weights=pretrained)
        except (ValueError, KeyError) as err:
            raise ConfigError(
                f"model.pretrained = {pretrained!r}: not a torchvision weights name for {arch} "
                f"(e.g. IMAGENET1K_V1) ({err})"
            ) from None
        except OSError as err:  # no network, no cached file
            raise ConfigError(
                f"model.pretrained = {pretrained!r}: could not fetch the weights ({err}); "
                f"download them once with network access, or use model.checkpoint"
            ) from None
        in_ch = input_shape[0]
        if stem == "cifar" or in_ch != 3:
            if pretrained:
                warnings.warn(
                    f"model.pretrained = {pretrained!r} with stem {stem!r} and {in_ch} input "
                    "channels: conv1 is re-initialised to fit",
                    stacklevel=2,
                )
            k, s, p = (3, 1, 1) if stem == "cifar" else (7, 2, 3)
            net.conv1 = nn.Conv2d(in_ch, 64, k, s, p, bias=False)
        pool = nn.Identity() if stem == "cifar" else net.maxpool
        self.stem = nn.Sequential(Site(0, "input"), net.conv1, net.bn1, net.relu, pool, Site(1, "stem"))
        self.layer1, self.site2 = net.layer1, Site(2, "layer1")
        self.layer2, self.site3 = net.layer2, Site(3, "layer2")
        self.layer3, self.site4 = net.layer3, Site(4, "layer3")
        self.layer4, self.site5 = net.layer4, Site(5, "layer4")
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(net.fc.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.site2(self.layer1(x))
        x = self.site3(self.layer2(x))
        x = self.site4(self.layer3(x))
        x = self.site5(self.layer4(x))
        return self.head(self.pool(x))
