"""Digits and npz data: splits, subsets, class selection, and npz validation."""

import numpy as np
import pytest
import torch

from adalase_tune.config import ConfigError, DataConfig
from adalase_tune.data import build_data


def test_digits_splits_are_disjoint_and_fixed():
    d = build_data(DataConfig(name="digits"))
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and not d.input_augment
    ids = [set(s.ids.tolist()) for s in (d.train, d.val, d.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 1797
    again = build_data(DataConfig(name="digits", n_train=100))
    assert np.array_equal(again.test.ids, d.test.ids) and np.array_equal(again.val.ids, d.val.ids)
    assert set(again.train.ids.tolist()) <= ids[0]
    counts = np.bincount(again.train.y.numpy(), minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11


def test_classes_are_selected_and_relabelled():
    d = build_data(DataConfig(name="digits", classes=(5, 6, 7, 8, 9), n_train=50))
    assert d.num_classes == 5 and len(d.train) == 50
    assert set(d.train.y.tolist()) == set(range(5)) and set(d.test.y.tolist()) == set(range(5))
    with pytest.raises(ConfigError, match=r"data.classes = \[3, 12\]: labels \[12\] do not occur"):
        build_data(DataConfig(name="digits", classes=(3, 12)))


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_images_vectors_and_val(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(
        tmp_path,
        x_train=rng.random((40, 6, 6)),
        y_train=np.arange(40) % 4,
        x_test=rng.random((12, 6, 6)),
        y_test=np.arange(12) % 4,
    )
    d = build_data(DataConfig(name="npz", path=path))
    assert d.input_shape == (1, 6, 6) and len(d.train) + len(d.val) == 40 and len(d.test) == 12
    path = _npz(
        tmp_path,
        x_train=rng.random((40, 7)),
        y_train=np.arange(40) % 2,
        x_test=rng.random((10, 7)),
        y_test=np.arange(10) % 2,
        x_val=rng.random((8, 7)),
        y_val=np.arange(8) % 2,
    )
    d = build_data(DataConfig(name="npz", path=path))
    assert d.input_shape == (7,) and len(d.train) == 40 and len(d.val) == 8


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((4, 3)), "y_train": np.zeros(5, int)}, r"y_train has shape \(5,\), but its x has 4 rows"),
        ({"x_train": np.full((4, 3), np.nan), "y_train": np.zeros(4, int)}, "x_train contains NaN"),
        ({"x_train": np.zeros((4, 3)), "y_train": -np.ones(4, int)}, "negative labels"),
        ({"x_train": np.zeros((4, 3)), "y_train": np.full(4, 0.5)}, "integer class labels"),
        ({"x_train": np.zeros((4, 3)), "y_train": np.zeros(4, int), "x_val": np.zeros((2, 3))}, "both x_val and y_val"),
    ],
)
def test_npz_errors_name_the_key(tmp_path, arrays, message):
    full = {"x_test": np.zeros((2, 3)), "y_test": np.zeros(2, int), **arrays}
    with pytest.raises(ConfigError, match=message):
        build_data(DataConfig(name="npz", path=_npz(tmp_path, **full)))


def test_motifs_is_fixed_and_its_label_survives_the_input_shift_by_construction():
    from adalase_tune.data._synthetic import DATASET_SEED, LENGTH, MARGIN, MOTIF, generate_motifs, motif_bank
    from adalase_tune.ops import get_op

    d = build_data(DataConfig(name="motifs", n_train=200))
    assert d.input_shape == (LENGTH,) and d.num_classes == 10 and len(d.train) == 200
    assert (len(d.val), len(d.test)) == (840, 1800)
    again = build_data(DataConfig(name="motifs", n_train=200))
    assert torch.equal(again.train.x, d.train.x) and np.array_equal(again.test.ids, d.test.ids)
    x, y, pos = generate_motifs(2000)
    assert pos.min() >= MARGIN and (pos + MOTIF).max() <= LENGTH - MARGIN  # a shift of <= MARGIN keeps it whole
    assert get_op("translate") is not None and int(LENGTH * get_op("translate").strength) == MARGIN
    bank = motif_bank(np.random.default_rng(DATASET_SEED))  # generate_motifs draws the bank first

    def matched_filter(signals):  # the motif with the best correlation at any position
        scores = np.stack([[np.correlate(s, m, mode="valid").max() for m in bank] for s in signals])
        return scores.argmax(1)

    assert (matched_filter(x[:500]) == y[:500]).mean() > 0.97
    shifted, _ = get_op("translate")(torch.as_tensor(x[:500]), np.random.default_rng(0))
    assert not torch.equal(shifted, torch.as_tensor(x[:500]))
    assert (matched_filter(shifted.numpy()) == y[:500]).mean() > 0.97  # the label is the same after the shift


def test_the_joint_known_answer_translate_is_the_only_op_that_adds_positions():
    """search_spaces/motifs_joint.yaml: of translate, cutout and noise at the input, only translate
    shows a motif at a new position with its label; noise keeps label and position (nothing new),
    cutout erases enough of the motif to lose the label in a large share of samples."""
    from adalase_tune.data._synthetic import DATASET_SEED, generate_motifs, motif_bank
    from adalase_tune.ops import get_op

    x, y, _ = generate_motifs(500)
    bank = motif_bank(np.random.default_rng(DATASET_SEED))

    def matched_filter(signals):  # (label, position) of the best-correlating motif
        scores = np.stack([[np.correlate(s, m, mode="valid") for m in bank] for s in signals])
        return scores.max(2).argmax(1), scores.max(1).argmax(1)

    label, where = matched_filter(x)
    assert (label == y).mean() > 0.99
    seen = {}
    for op in ("translate", "noise", "cutout"):
        out, _ = get_op(op)(torch.as_tensor(x), np.random.default_rng(1))
        new_label, new_where = matched_filter(out.numpy())
        seen[op] = ((new_label == y).mean(), (new_where != where).mean())
    assert seen["translate"][0] > 0.99 and seen["translate"][1] > 0.8  # new positions, right labels
    assert seen["noise"][0] > 0.99 and seen["noise"][1] < 0.02  # the same positions: nothing the data lack
    assert seen["cutout"][0] < 0.7  # the label is gone from a large share of samples


def test_the_hidden_layer_known_answer_holds_the_plain_signal_at_hidden1_by_construction():
    """motifs_scrambled + the unscrambler: hidden1 is relu(gain * the plain motifs signal), so a shift
    there is a shift of the motif (it commutes with the first layer), while a shift of the input moves
    values between unrelated positions."""
    from adalase_tune.known_answer import GAIN, unscrambler
    from adalase_tune.ops._translate import shift

    scrambled = build_data(DataConfig(name="motifs_scrambled", n_train=200, subset_seed=0))
    plain = build_data(DataConfig(name="motifs", n_train=200, subset_seed=0))
    assert list(scrambled.train.ids) == list(plain.train.ids) and list(scrambled.test.ids) == list(plain.test.ids)
    assert not torch.allclose(scrambled.train.x, plain.train.x)
    first = unscrambler().features[:4]  # input site, flatten, the first layer, its ReLU
    x, s = scrambled.train.x[:64], plain.train.x[:64]
    with torch.no_grad():
        h1 = first(x)
        assert torch.allclose(h1, torch.relu(GAIN * s), atol=1e-5)
        offsets = np.random.default_rng(0).integers(-6, 7, 64)
        assert torch.allclose(shift(h1, 1, offsets), torch.relu(GAIN * shift(s, 1, offsets)), atol=1e-5)
        # at the input the same shift is no shift of the signal
        assert not torch.allclose(first(shift(x, 1, offsets)), shift(h1, 1, offsets), atol=1e-2)
