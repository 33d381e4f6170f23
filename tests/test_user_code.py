"""A user's own models and data by reference (``module:attr``, entry points), with nothing
registered inside adalase_tune: in-process, in sweeps and benchmarks on a real local Ray, and from
the command line. The user's package is ``tests/userpkg`` (importable as ``userpkg``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import adalase_tune
from adalase_tune.config import ConfigError
from adalase_tune.data import DATASETS, build_data
from adalase_tune.experiment import run_benchmark, sweep, train
from adalase_tune.models import MODELS, build_model
from adalase_tune.tuning import SweepOptions

from conftest import tiny_config

TESTS = Path(__file__).parent
CNN = {"model.name": "userpkg.models:build_cnn", "data.name": "userpkg.data:build_images"}
RESNET = {
    "model.name": "userpkg.models:build_resnet18",
    "model.sites": ["layer1", "layer2", "layer3"],
    "data.name": "userpkg.data:build_images",
}
VECTORS = {
    "model.name": "userpkg.models:build_vector_mlp",
    "model.hidden": [16],
    "data.name": "userpkg.data:build_vectors",
}
USER = {"cnn": (CNN, ["input", "conv1", "conv2"]), "resnet18": (RESNET, ["input", "layer1", "layer2", "layer3"])}
USER["vectors"] = (VECTORS, ["input", "hidden1", "hidden2"])
ENTRY_POINTS = """[adalase_tune.models]
tinycnn = userpkg.models:build_cnn
broken = userpkg.nomodule:build

[adalase_tune.data]
patches = userpkg.data:build_images
"""


def user_config(kind: str, **overrides):
    return tiny_config(**{**USER[kind][0], "data.n_train": 60, "train.epochs": 1, **overrides})


def installed_plugin(folder: Path) -> Path:
    """An installed distribution with entry points, as pip would leave it: a .dist-info folder."""
    info = folder / "userpkg_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder


# --- in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(USER))
def test_a_user_model_and_dataset_train_in_process(kind):
    summary = train(user_config(kind), tracking_uri=None, progress=False)
    assert summary["sites"] == USER[kind][1]
    assert 0.0 <= summary["best_val_acc"] <= 1.0 and summary["epochs"] == 1


def test_a_user_dataset_gets_the_built_in_splits_and_subsets():
    cfg = tiny_config(**CNN, **{"data.n_train": 30}).data
    data = build_data(cfg)
    assert data.input_shape == (3, 16, 16) and data.num_classes == 3  # Patches.classes
    assert (len(data.train), len(data.val), len(data.test)) == (30, 48, 60)  # val: 0.2 of the 240 held out
    assert np.bincount(data.train.y.numpy()).tolist() == [10, 10, 10]  # stratified
    assert not set(data.train.ids) & set(data.val.ids)
    assert set(data.for_seed(0).train.ids) != set(data.for_seed(1).train.ids)  # each seed its own subset
    assert abs(float(data.train.x.mean())) < 0.5  # normalised with the training split's statistics
    vectors = build_data(tiny_config(**VECTORS, **{"data.n_train": 30}).data)
    assert vectors.input_shape == (12,) and (len(vectors.val), len(vectors.test)) == (60, 60)  # its own val


def test_sites_by_module_name_on_a_torchvision_resnet():
    model = build_model(tiny_config(**RESNET).model, (3, 16, 16), 3)
    assert [(s.name, s.shape) for s in model.da_sites] == [
        ("input", (3, 16, 16)),
        ("layer1", (64, 4, 4)),
        ("layer2", (128, 2, 2)),
        ("layer3", (256, 1, 1)),
    ]


def test_entry_points_name_installed_models_and_datasets(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin(tmp_path)))
    assert "tinycnn" in MODELS.names() and "patches" in DATASETS.names()
    with pytest.raises(ConfigError, match="choose one of mlp, cnn, .*tinycnn"):
        MODELS.get("tinycnm")
    with pytest.raises(ConfigError, match="model.name = 'broken': the entry point 'userpkg.nomodule:build' of "
                       "userpkg-plugins .* does not load: ModuleNotFoundError"):  # fmt: skip
        MODELS.get("broken")
    cfg = tiny_config(**{"model.name": "tinycnn", "data.name": "patches", "data.n_train": 60, "train.epochs": 1})
    assert train(cfg, tracking_uri=None, progress=False)["sites"] == ["input", "conv1", "conv2"]


def test_a_built_in_image_model_on_vectors_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"model.name = 'cnn' needs images \(C, H, W\).*vectors of shape \(12,\)"):
        train(tiny_config(**{**VECTORS, "model.name": "cnn"}), tracking_uri=None, progress=False)


# --- errors on the driver, before any work ----------------------------------------------------------

BAD = {
    "unknown name": ({"model.name": "mycnn"}, "model.name = 'mycnn': choose one of mlp, cnn"),
    "bad module": ({"model.name": "userpkg.modles:build_cnn"}, "model.name = 'userpkg.modles:build_cnn': no module"),
    "bad attribute": (
        {"model.name": "userpkg.models:build_cnm"},
        "model.name = 'userpkg.models:build_cnm': userpkg.models has no attribute 'build_cnm' "
        "(did you mean 'build_cnn'?)",
    ),
    "bad data attribute": (
        {"data.name": "userpkg.data:build_imgs"},
        "data.name = 'userpkg.data:build_imgs': userpkg.data has no attribute 'build_imgs'",
    ),
    "missing site module": (
        {**RESNET, "model.sites": ["layer1", "layer9"]},
        "model.sites = ['layer1', 'layer9']: ResNet has no submodule 'layer9'",
    ),
    "no sites": ({**RESNET, "model.sites": None}, "publishes no DA sites"),
    "not a module": ({"model.name": "userpkg.models:build_broken"}, "returned a str, not an nn.Module"),
    "bad splits": ({"data.name": "userpkg.data:build_bad_splits"}, "returned splits ['training']"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_reference_fails_on_the_driver_naming_field_and_value(case, tmp_path):
    import ray

    overrides, message = BAD[case]
    cfg = tiny_config(**{**CNN, **overrides})
    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    was_up = ray.is_initialized()
    for call in (
        lambda: train(cfg, tracking_uri=f"sqlite:///{db}", progress=False),
        lambda: sweep(cfg, "uniform", SweepOptions(storage=str(storage)), tracking_uri=f"sqlite:///{db}"),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value)
    assert not db.exists() and not storage.exists() and ray.is_initialized() == was_up


def _cli(*argv, cwd=None, path=(TESTS,), timeout=300, env=None):
    folders = [*map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(folders), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "adalase_tune", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _yaml(tmp_path: Path, overrides: dict, name: str = "user.yaml") -> Path:
    tree = user_config("cnn", **overrides).to_dict()
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def test_the_cli_refuses_a_bad_reference_with_exit_2_and_creates_nothing(tmp_path):
    config = _yaml(tmp_path, {})
    ray_tmp = tmp_path / "r"
    proc = _cli(
        "sweep", str(config), "--method", "uniform", "--storage", str(tmp_path / "ray"),
        "--set", "model.name=userpkg.models:buld", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
        cwd=tmp_path, env={"RAY_TMPDIR": str(ray_tmp)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.name = 'userpkg.models:buld': userpkg.models has no attribute 'buld'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.yaml"]  # no storage, no MLflow, no Ray session


# --- on Ray workers and from the command line --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(USER))
def test_a_sweep_runs_user_code_in_ray_worker_processes(kind, ray_local, tmp_path):
    options = SweepOptions(seeds=[0], budgets={"random": {"num_samples": 2}}, storage=str(tmp_path / "ray"))
    rows = sweep(user_config(kind), "random", options, tracking_uri=None).rows
    assert len(rows) == 2 and (rows["status"] == "TERMINATED").all(), list(rows["error"])
    assert all(f"da_prob/{site}" in rows for site in USER[kind][1])  # the user's sites
    for r in rows.to_dict("records"):
        assert json.loads(r["params"])["da_pick"]["arm"] in USER[kind][1]


@pytest.mark.slow
def test_a_benchmark_of_a_user_vector_model_with_mlflow(ray_local, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = SweepOptions(seeds=[0], storage=str(tmp_path / "ray"), name="user-vectors")
    result = run_benchmark(
        user_config("vectors"), ["uniform", "grid"], options, out=str(tmp_path / "out"), tracking_uri=uri,
        experiment="user",
    )  # fmt: skip
    assert (result.trials["status"] == "TERMINATED").all() and len(result.trials) == 1 + 3
    assert result.sites == USER["vectors"][1]
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("user").experiment_id])
    assert {r.data.params.get("model.name") for r in runs} >= {VECTORS["model.name"]}


@pytest.mark.slow
def test_the_cli_trains_sweeps_and_benchmarks_user_code(tmp_path):
    config = _yaml(tmp_path, {})
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _cli("train", str(config), "--quiet", "--out", str(tmp_path / "t.json"), "--tracking-uri", db, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "t.json").read_text())["sites"] == ["input", "conv1", "conv2"]
    ray_args = ["--storage", str(tmp_path / "ray"), "--tracking-uri", db, "--cpus-per-trial", "1"]
    proc = _cli("sweep", str(config), "--method", "random", "--num-samples", "2", "--out", str(tmp_path / "s"),
                *ray_args, "--set", f"model.name={RESNET['model.name']}", "--set", "model.sites=[layer1,layer2]",
                cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "s" / "results.csv")
    assert len(rows) == 2 and (rows["status"] == "TERMINATED").all()
    plugin = installed_plugin(tmp_path / "site")  # the entry points of an installed package, by name
    proc = _cli("benchmark", str(config), "--methods", "uniform,none", "--out", str(tmp_path / "b"), *ray_args,
                "--set", "model.name=tinycnn", "--set", "data.name=patches", "--name", "b",
                cwd=tmp_path, path=(TESTS, plugin))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "b" / "results.csv")
    assert set(table["method"]) == {"uniform", "none"}, table


REGISTERED_SWEEP = """
import sys

import userpkg.registered  # the user's own module: MODELS.register("userpkg_cnn"), DATASETS.register(...)
from adalase_tune import SweepOptions, load_config, sweep

overrides = ["model.name=userpkg_cnn", "data.name=userpkg_patches", "data.n_train=60", "train.epochs=1"]
cfg = load_config(None, overrides + ["model.width=4", "train.device=cpu"])
options = SweepOptions(seeds=[0], budgets={"random": {"num_samples": 2}}, storage=sys.argv[1])
print("STATUS", ",".join(sweep(cfg, "random", options, tracking_uri=None).rows["status"]))
"""


@pytest.mark.slow
def test_names_registered_in_process_reach_the_ray_workers(tmp_path):
    """``MODELS.register`` in a user's module: the local Ray's workers import that module again."""
    script = tmp_path / "registered_sweep.py"
    script.write_text(REGISTERED_SWEEP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ray")], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "STATUS TERMINATED,TERMINATED" in proc.stdout, proc.stderr[-3000:]


def test_nothing_is_registered_inside_the_package():
    assert "userpkg" not in " ".join(MODELS.names() + DATASETS.names())
    assert adalase_tune.Site.__module__ == "adalase_tune.sites"
