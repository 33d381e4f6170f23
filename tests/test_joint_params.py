"""The joint setting's op in MLflow: a method's parent run and its trial runs log ``augment.*``
with one meaning (the ops used, ``joint over translate, cutout, noise``), in the real SQLite store."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from adalase_tune import load_config, sweep
from adalase_tune.tracking import augment_params, trial_params
from adalase_tune.tuning import SweepOptions

JOINT = Path(__file__).resolve().parents[1] / "search_spaces" / "motifs_joint.yaml"
SMALLEST = ["train.epochs=1", "data.n_train=40", "model.hidden=[16,16]"]


def _augment(params: dict) -> dict:
    return {k: v for k, v in params.items() if k.startswith("augment.")}


def test_a_trial_logs_the_ops_it_uses_not_the_unused_default():
    cfg = load_config(JOINT, SMALLEST)
    assert cfg.augment.op == "mixup"  # the default, unused once augment.ops is set
    logged = trial_params(cfg, {})
    assert logged["augment.op"] == "joint over translate, cutout, noise" == augment_params(cfg)["augment.op"]
    one = load_config(None, ["augment.op=cutout"])
    assert trial_params(one, {})["augment.op"] == "cutout"  # a single op: as before


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_a_joint_sweep_logs_augment_params_with_one_meaning_on_parent_and_children(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = SweepOptions(seeds=[0], num_samples=2, storage=str(tmp_path / "ray"), name="joint-params")
    sweep(load_config(JOINT, SMALLEST), "random", options, tracking_uri=uri, experiment="joint")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("joint").experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("run_kind") == "method"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    shared = _augment(parent.data.params)
    assert shared == {"augment.op": "joint over translate, cutout, noise"}
    for child in children:
        assert {k: v for k, v in _augment(child.data.params).items() if k in shared} == shared
