"""A known answer at a hidden layer: the network that undoes ``motifs_scrambled``'s order.

``write_unscrambler(path)`` writes a ``model.checkpoint`` for ``mlp`` with ``hidden: [32, ...]``
whose first layer is the inverse of the scramble: the first hidden layer then holds the positive
part of the motif signal in its own order, ``relu(gain * s)``. A shift commutes with it (the zero
fill is ``relu(0)``), so ``translate`` there shifts the motif and keeps the label, while at the
input it moves values between unrelated positions. The other layers are a fresh initialisation (seed 0);
every layer is fine-tuned. docs/known_answer.md explains the task.

Example::

    write_unscrambler("runs/unscrambler.pt")
    # adalase-tune benchmark search_spaces/motifs_hidden.yaml --set model.checkpoint=runs/unscrambler.pt
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelConfig
from .data._synthetic import CLASSES, LENGTH, scramble_order
from .models import build_model, save_model

GAIN = 4.0  # the first layer's weights: large against its updates, so that fine-tuning keeps the order


def unscrambler(hidden: tuple[int, ...] = (LENGTH, 256), gain: float = GAIN) -> torch.nn.Module:
    """The MLP whose first layer maps a scrambled signal back to its order, ``h1 = relu(gain * s)``;
    the second layer's weights are divided by ``gain``, so that the network computes what a fresh
    one on ``relu(s)`` would."""
    if hidden[0] != LENGTH:
        raise ValueError(
            f"model.hidden = {list(hidden)}: the first hidden layer must have {LENGTH} units, one a position"
        )
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", hidden=tuple(hidden)), (LENGTH,), CLASSES)
    features = model.get_submodule("features")
    first, second = features.get_submodule("2"), features.get_submodule("5")  # the first two nn.Linear
    assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
    order = scramble_order()  # x[:, j] = s[:, order[j]]: unit order[j] reads input j
    with torch.no_grad():
        first.weight.zero_()
        first.weight[torch.as_tensor(order), torch.arange(LENGTH)] = gain
        first.bias.zero_()
        second.weight /= gain
    return model


def write_unscrambler(path: str | Path, hidden: tuple[int, ...] = (LENGTH, 256), gain: float = GAIN) -> str:
    """Write :func:`unscrambler` as a ``model.checkpoint``; returns the path."""
    model = unscrambler(hidden, gain)
    save_model(model, path, {"model": {"name": "mlp", "hidden": list(hidden)}, "known_answer": "unscrambler"})
    return str(path)
