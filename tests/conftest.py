"""Shared fixtures: tiny configs on the embedded digits data, so the default run is fast."""

import numpy as np
import pytest
import torch

from adalase_tune.config import from_dict


def override(tree: dict, overrides: dict) -> dict:
    """``tree`` with ``{"section.name": value}`` overrides set in place (sections created as needed)."""
    for key, value in overrides.items():
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = value
    return tree


# the paper's one-run form of AdaLASE (the default adds a retrain and holds pseudo-validation data
# out): for tests of the AdaLASE step itself
ONE_RUN = {"adalase.retrain": False, "adalase.val_source": "train"}


def tiny_config(**overrides):
    """A digits config that trains in well under a second per epoch on CPU."""
    tree = {
        "data": {"name": "digits", "n_train": 100},
        "model": {"name": "cnn", "width": 4},
        "selection": {"method": "uniform"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 0, "device": "cpu"},
    }
    return from_dict(override(tree, overrides))


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(autouse=True, scope="session")
def _tracking_in_a_temporary_folder(tmp_path_factory):
    """No test writes mlflow.db into the working folder: the default store is a temporary one."""
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/default.db"
    yield


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # stable timings on 2 cores, and the same results every time
    yield


def onehot(y, k):
    return torch.nn.functional.one_hot(torch.as_tensor(y), k).float()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (ray.init costs seconds)."""
    import ray

    from adalase_tune.tuning import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


def tiny_tree(**overrides):
    return tiny_config(**overrides).to_dict()
