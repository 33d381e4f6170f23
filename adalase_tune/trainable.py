"""The one Ray Tune trainable behind every method (every Ray call of a trial lives here).

A trial builds its own data (no dataset travels through the object store), restores from
``ray.tune.get_checkpoint()`` when Tune restarts or PBT exploits it, and reports once per epoch
with a checkpoint.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import ray
import torch
from ray import tune

from .checkpoint import atomic_save, safe_load
from .engine import Trainer
from .search import trial_config

STATE_FILE = "state.pt"


def make_trainable(base: dict, sites: Sequence[str], threads: int = 1,
                   tracker_factory: Optional[Callable] = None) -> Callable[[dict], None]:
    """A function trainable for ``base`` (the resolved experiment dict) over ``sites``.

    ``tracker_factory(cfg, sites, trial_id)`` may return an object with ``log_epoch(metrics)``,
    ``finish(summary)`` and ``fail(error)`` (the MLflow tracker), created inside the trial.
    """
    sites = list(sites)

    def adalase_trial(params: dict) -> None:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per saved checkpoint
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        torch.set_num_threads(max(1, int(threads)))
        cfg = trial_config(base, params, sites)
        context = tune.get_context()
        node = ray.get_runtime_context().get_node_id()
        tracker = tracker_factory(cfg, sites, context.get_trial_id()) if tracker_factory else None
        if tracker is not None:
            tracker.tag("node_id", node)

        def report(metrics: dict, state: dict) -> None:
            if tracker is not None:
                tracker.log_epoch(metrics)
            with tempfile.TemporaryDirectory() as d:
                atomic_save(state, Path(d) / STATE_FILE)
                tune.report({**metrics, "node_id": node, "pid": os.getpid()},
                            checkpoint=tune.Checkpoint.from_directory(d))

        try:
            trainer = Trainer(cfg, report=report)
            checkpoint = tune.get_checkpoint()
            if checkpoint is not None:
                with checkpoint.as_directory() as d:
                    trainer.load_state_dict(safe_load(Path(d) / STATE_FILE), source="Tune checkpoint",
                                            adopt_search_params=True)
            summary = trainer.run()
        except Exception as err:
            if tracker is not None:
                tracker.fail(err)
            raise
        if tracker is not None:
            tracker.finish(summary)

    return adalase_trial
