"""Builders ``(cfg, input_shape, num_classes) -> nn.Module``, as for the built-in models."""

from __future__ import annotations

import torchvision
from torch import nn

from adalase_tune import Site


class TinyCNN(nn.Module):
    """Publishes its own sites: ``Site`` modules in the forward pass (input, conv1, conv2)."""

    def __init__(self, channels: int, width: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            Site(0, "input"),
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            Site(1, "conv1"),
            nn.Conv2d(width, width, 3, padding=1, stride=2),
            nn.ReLU(),
            Site(2, "conv2"),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def build_cnn(cfg, input_shape, num_classes):
    return TinyCNN(input_shape[0], cfg.width, num_classes)


def build_resnet18(cfg, input_shape, num_classes):
    """A plain torchvision ResNet-18: no Site modules; sites come from ``model.sites``."""
    return torchvision.models.resnet18(num_classes=num_classes)


class VectorMLP(nn.Module):
    """For (N, D) data: sites at the input and after each hidden layer."""

    def __init__(self, dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            Site(0, "input"),
            nn.Linear(dim, hidden),
            nn.ReLU(),
            Site(1, "hidden1"),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            Site(2, "hidden2"),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def build_vector_mlp(cfg, input_shape, num_classes):
    (dim,) = input_shape
    return VectorMLP(dim, cfg.hidden[0], num_classes)


def build_broken(cfg, input_shape, num_classes):
    return "not a module"
