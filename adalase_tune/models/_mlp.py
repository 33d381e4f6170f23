"""A multilayer perceptron: sites are the input and each hidden layer's output.

The input site sees the input as it comes (an image stays (C, H, W), so translate and cutout act
in 2-D there); the flattening happens after it.
"""

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from ..sites import Site


class MLP(nn.Module):
    """``MLP((1, 8, 8), hidden=(1000,), num_classes=10)``: the paper's MLP has one hidden layer of 1000."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (1000,), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [Site(0, "input"), nn.Flatten()]
        width = prod(input_shape)
        for i, w in enumerate(hidden):
            layers += [nn.Linear(width, w), nn.ReLU(inplace=True), Site(i + 1, f"hidden{i + 1}")]
            width = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
