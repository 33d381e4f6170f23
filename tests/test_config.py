"""Typed config: YAML, --set overrides, and errors that name the field, the value and the fix."""

import pytest

from adalase_tune.config import ConfigError, ExperimentConfig, flatten, from_dict, load_config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("data: {name: digits}\ntrain: {epochs: 3}\nsweep: {num_samples: 4}\n")
    cfg = load_config(
        path, ["train.lr=1e-3", "model.hidden=[64, 32]", "selection.site=stage2"], extra_sections=("sweep",)
    )
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001
    assert cfg.model.hidden == (64, 32) and cfg.selection.site == "stage2"


def test_round_trip_and_flatten():
    cfg = ExperimentConfig()
    assert from_dict(cfg.to_dict()) == cfg
    flat = flatten(cfg.to_dict())
    assert flat["adalase.eta"] is None and cfg.adalase.eta_value() == 10.0 and flat["data.name"] == "digits"  # fast
    assert cfg.replace(**{"train.seed": 3}).train.seed == 3


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"trian": {}}, r"unknown config section 'trian' \(did you mean 'train'\?\)"),
        ({"train": {"epoch": 3}}, r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\)"),
        ({"train": {"epochs": "many"}}, r"train.epochs = 'many': expected a whole number"),
        ({"train": {"epochs": 0}}, r"train.epochs = 0: must lie in \[1, inf\]"),
        ({"train": {"lr": -1}}, r"train.lr = -1.0: must lie in \(0.0, 100.0\]"),
        ({"train": {"lr": float("inf")}}, r"train.lr = inf: must lie in \(0.0, 100.0\]"),
        ({"train": {"weight_decay": float("inf")}}, r"train.weight_decay = inf: must lie in \[0.0, 1.0\]"),
        ({"train": {"seed": -1}}, r"train.seed = -1: must lie in \[0, 4294967295\]"),
        ({"train": {"seed": 2**40}}, r"train.seed = 1099511627776: must lie in \[0, 4294967295\]"),
        ({"data": {"classes": []}}, r"data.classes = \[\]: list at least two labels"),
        ({"adalase": {"holdout_fraction": 1.0}}, r"adalase.holdout_fraction = 1.0: must lie in \(0.0, 1.0\)"),
        ({"adalase": {"update": "scaled"}}, r"adalase.update = 'scaled': choose one of raw, normalized"),
        ({"adalase": {"credit": "all"}}, r"adalase.credit = 'all': choose one of step, reuse, window"),
        ({"adalase": {"eta": -0.1}}, r"adalase.eta = -0.1: must lie in \[0.0, inf\)"),
        ({"adalase": {"min_rate_sum": 1.0}}, r"adalase.min_rate_sum = 1.0: must lie in \[0.0, 1.0\)"),
        ({"adalase": {"val_source": "test"}}, r"adalase.val_source = 'test': choose one of train, holdout"),
        ({"data": {"n_train": 0}}, r"data.n_train = 0"),
        ({"data": {"name": "npz"}}, r"data.path = None: data.name=npz needs data.path"),
        ({"model": {"stem": "cifra"}}, r"model.stem = 'cifra'.*did you mean 'cifar'"),
        ({"model": {"checkpoint": "/nonexistent.pt"}}, r"model.checkpoint = '/nonexistent.pt': no such file"),
        ({"train": {"nesterov": "yes"}}, r"train.nesterov = 'yes': expected true or false"),
        ({"train": {"momentum": 0.0}}, r"train.nesterov = True: Nesterov needs train.momentum > 0"),
        ({"augment": {"strength": 0}}, r"augment.strength = 0.0"),
    ],
)
def test_bad_values_name_field_value_and_fix(tree, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(tree)


def test_a_key_given_twice_in_yaml_is_an_error(tmp_path):
    for text in ("train:\n  epochs: 3\n  epochs: 4\n", "train: {epochs: 3}\ntrain: {lr: 0.1}\n"):
        path = tmp_path / "dup.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"dup.yaml' line \d+, column \d+: .*given twice"):
            load_config(path)


def test_sweep_section_is_typed():
    from adalase_tune.config import SweepConfig, _build_section

    s = _build_section("sweep", SweepConfig, {"seeds": 3, "methods": {"random": {"num_samples": 2}, "adalase": None}})
    assert s.seeds == (0, 1, 2) and s.methods == {"random": {"num_samples": 2}, "adalase": {}}
    for bad, message in (
        ({"seed": 3}, "unknown config key 'sweep.seed'"),
        ({"seeds": 0}, r"sweep.seeds = 0"),
        ({"seeds": [1, 1]}, "listed twice"),
        ({"methods": ["a"]}, "expected a mapping"),
        ({"cpus_per_trial": 0}, r"sweep.cpus_per_trial = 0.0"),
    ):
        with pytest.raises(ConfigError, match=message):
            _build_section("sweep", SweepConfig, bad)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' line \d+, column \d+: YAML syntax error"):
        load_config(path)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="section.name"):
        load_config(None, ["epochs=3"])
