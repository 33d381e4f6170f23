"""A small 4-stage conv net for 8x8 to 32x32 inputs: sites input, stage1..stage4."""

from collections.abc import Sequence

import torch
from torch import nn

from ..sites import Site


def _stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class SmallCNN(nn.Module):
    """Widths w, 2w, 4w, 4w; stages 2 and 3 halve the map (8x8 -> 2x2, 32x32 -> 8x8)."""

    def __init__(self, input_shape: Sequence[int], width: int = 32, num_classes: int = 10):
        super().__init__()
        c = input_shape[0]
        w = (width, 2 * width, 4 * width, 4 * width)
        self.features = nn.Sequential(
            Site(0, "input"),
            *_stage(c, w[0], False),
            Site(1, "stage1"),
            *_stage(w[0], w[1], True),
            Site(2, "stage2"),
            *_stage(w[1], w[2], True),
            Site(3, "stage3"),
            *_stage(w[2], w[3], False),
            Site(4, "stage4"),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(w[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
