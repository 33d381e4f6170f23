"""AdaLASE as a Lightning callback: the LightningModule keeps its loop, AdaLASE picks the site.

Two lines in a LightningModule project (docs/own_loop.md)::

    trainer = L.Trainer(callbacks=[AdaLASECallback(val=val_set, sites=["layer1", "layer2"])])
    # in training_step, the loss against the mixed targets:
    loss = mixed_loss(self.model(x), y)

The callback builds one :class:`~adalase_tune.loop.AdaLASE` over the module and its (first)
optimizer when training starts, samples each batch's arm before ``training_step`` and opens the
DA context for its forward pass, keeps the step's direction before the optimizer steps, and takes
the hypergradient after. ``q`` goes to the module's logger every epoch (``adalase/q/<arm>``).
Needs ``pip install lightning``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

try:
    from lightning.pytorch import Callback
except ImportError as err:  # pragma: no cover - an optional dependency
    raise ImportError("adalase_tune.lightning needs Lightning: pip install lightning") from err

from . import keys
from .loop import AdaLASE
from .sites import DAContext

if TYPE_CHECKING:
    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.utilities.types import STEP_OUTPUT


class AdaLASECallback(Callback):
    """``AdaLASE(pl_module, optimizer, **kwargs)`` run by Lightning's hooks; ``kwargs`` as for
    :class:`~adalase_tune.loop.AdaLASE` (``val``, ``sites``, ``op``, ``preset``, ``settings``,
    ``seed``...), with the run's length taken from the Lightning ``Trainer``."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.ada: Optional[AdaLASE] = None
        self._ctx: Optional[DAContext] = None
        self._state: Optional[dict] = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"AdaLASECallback takes one optimizer; configure_optimizers returned {len(trainer.optimizers)}"
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"accumulate_grad_batches = {trainer.accumulate_grad_batches}: AdaLASE samples a site per optimizer "
                "step; use 1 (a larger batch) with AdaLASECallback"
            )
        steps = trainer.num_training_batches
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"AdaLASECallback needs a sized train loader (num_training_batches = {steps})")
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epochs = epochs or max(1, -(-int(trainer.estimated_stepping_batches) // steps))
        self.ada = AdaLASE(pl_module, trainer.optimizers[0], epochs=epochs, steps_per_epoch=steps, **self.kwargs)
        if self._state is not None:
            self.ada.load_state_dict(self._state)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        assert self.ada is not None, "on_train_start built the AdaLASE object"
        self._ctx = ctx = self.ada.context(len(batch[1]))
        ctx.__enter__()

    def _close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._close()  # the forward is done: the pseudo-validation pass must see no DA
        assert self.ada is not None
        self.ada.after_backward()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        self._close()
        assert self.ada is not None
        self.ada.after_step()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.ada is not None and self.ada.q is not None:
            pl_module.log_dict({keys.q(a): float(p) for a, p in zip(self.ada.arm_names, self.ada.q)})

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()

    def state_dict(self) -> dict:
        return {} if self.ada is None else self.ada.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._state = state_dict or None
