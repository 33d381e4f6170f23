"""Data loading through torchvision's real loaders, on tiny files in each dataset's true on-disk format.

Each writer below produces what the dataset's download unpacks to (CIFAR's Python 2 pickles, SVHN's
MATLAB 5 files, MNIST's idx files, an ImageFolder tree of PNGs), a few dozen images per split, and
returns what it wrote, so the tests can check the loaded splits pixel by pixel and label by label.
Nothing is downloaded.
"""

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.svhn as tv_svhn
from PIL import Image
from torchvision.datasets.utils import check_integrity

from adalase_tune.config import ConfigError, DataConfig
from adalase_tune.data import build_data
from adalase_tune.data._sources import SOURCES


@dataclass
class Written:
    """What a writer put on disk: images (N, C, H, W) as the loader should return them, in [0, 1]."""

    cfg: dict  # DataConfig fields that point at the files
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: bool  # the dataset's usual input augmentation


def _labels(counts, rng, classes=None):
    classes = np.arange(len(counts)) if classes is None else np.asarray(classes)
    return rng.permutation(np.repeat(classes, counts)).astype(np.int64)


def _images(n, c, h, w, rng):
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)


# --- CIFAR: pickles written by Python 2 ------------------------------------------------------------


class _Py2Str(bytes):
    """A Python 2 ``str``: loads as ``str`` under encoding='latin1' (torchvision), ``bytes`` under 'bytes'."""


class _Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj):
        raw = bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _py2_pickle(path: Path, tree: dict):
    def conv(v):
        if isinstance(v, str):
            return _Py2Str(v.encode("latin1"))
        if isinstance(v, list):
            return [conv(e) for e in v]
        return v

    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({conv(k): conv(v) for k, v in tree.items()})


def _cifar_batch(x, y, label_key, name):
    tree = {
        "batch_label": name,
        label_key: [int(v) for v in y],
        "data": x.reshape(len(x), 3 * 32 * 32),
        "filenames": [f"img_{i:05d}.png" for i in range(len(y))],
    }
    if label_key == "fine_labels":
        tree["coarse_labels"] = [int(v) // 5 for v in y]
    return tree


def write_cifar10(tmp_path: Path, rng) -> Written:
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    y_tr = _labels([8, 6, 5, 4, 4, 3, 3, 3, 2, 2], rng)  # 40, uneven so stratification shows
    y_te = _labels([2] * 10, rng)
    x_tr, x_te = _images(len(y_tr), 3, 32, 32, rng), _images(len(y_te), 3, 32, 32, rng)
    for b in range(5):
        part = slice(8 * b, 8 * (b + 1))
        _py2_pickle(
            folder / f"data_batch_{b + 1}",
            _cifar_batch(x_tr[part], y_tr[part], "labels", f"training batch {b + 1} of 5"),
        )
    _py2_pickle(folder / "test_batch", _cifar_batch(x_te, y_te, "labels", "testing batch 1 of 1"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _py2_pickle(folder / "batches.meta", {"num_cases_per_batch": 8, "label_names": names, "num_vis": 3072})
    return Written(
        {"name": "cifar10", "root": str(tmp_path / "root")}, x_tr / 255.0, y_tr, x_te / 255.0, y_te, 10, True
    )


def write_cifar100(tmp_path: Path, rng) -> Written:
    folder = tmp_path / "root" / "cifar-100-python"
    folder.mkdir(parents=True)
    classes = [0, 13, 42, 77, 99]  # 99 present: the label space is 0..99
    y_tr = _labels([14, 11, 9, 8, 6], rng, classes)
    y_te = _labels([4] * 5, rng, classes)
    x_tr, x_te = _images(len(y_tr), 3, 32, 32, rng), _images(len(y_te), 3, 32, 32, rng)
    _py2_pickle(folder / "train", _cifar_batch(x_tr, y_tr, "fine_labels", "training batch 1 of 1"))
    _py2_pickle(folder / "test", _cifar_batch(x_te, y_te, "fine_labels", "testing batch 1 of 1"))
    _py2_pickle(
        folder / "meta",
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
    )
    return Written(
        {"name": "cifar100", "root": str(tmp_path / "root")}, x_tr / 255.0, y_tr, x_te / 255.0, y_te, 100, True
    )


# --- SVHN: MATLAB 5 files, X (32, 32, 3, N), y (N, 1) with 10 for the digit 0 ------------------------


def _svhn_mat(path: Path, x, y):
    scipy.io.savemat(
        str(path),
        {
            "X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)),  # X[h, w, c, n]
            "y": np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1),
        },
    )


def write_svhn(tmp_path: Path, rng) -> Written:
    root = tmp_path / "root"
    root.mkdir()
    y_tr = _labels([6, 8, 5, 4, 4, 3, 3, 3, 2, 2], rng)
    y_te = _labels([2] * 10, rng)
    x_tr, x_te = _images(len(y_tr), 3, 32, 32, rng), _images(len(y_te), 3, 32, 32, rng)
    _svhn_mat(root / "train_32x32.mat", x_tr, y_tr)
    _svhn_mat(root / "test_32x32.mat", x_te, y_te)
    return Written({"name": "svhn", "root": str(root)}, x_tr / 255.0, y_tr, x_te / 255.0, y_te, 10, True)


# --- MNIST / Fashion-MNIST: uncompressed idx files --------------------------------------------------


def _idx(path: Path, arr: np.ndarray):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = (0x08 << 8) | arr.ndim  # 0x00000803 images, 0x00000801 labels (unsigned bytes)
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def _write_mnist_like(tmp_path: Path, rng, name: str, folder: str) -> Written:
    raw = tmp_path / "root" / folder / "raw"
    raw.mkdir(parents=True)
    y_tr = _labels([8, 6, 5, 4, 4, 3, 3, 3, 2, 2], rng)
    y_te = _labels([2] * 10, rng)
    x_tr, x_te = _images(len(y_tr), 1, 28, 28, rng), _images(len(y_te), 1, 28, 28, rng)
    _idx(raw / "train-images-idx3-ubyte", x_tr[:, 0])
    _idx(raw / "train-labels-idx1-ubyte", y_tr)
    _idx(raw / "t10k-images-idx3-ubyte", x_te[:, 0])
    _idx(raw / "t10k-labels-idx1-ubyte", y_te)
    return Written({"name": name, "root": str(tmp_path / "root")}, x_tr / 255.0, y_tr, x_te / 255.0, y_te, 10, False)


def write_mnist(tmp_path, rng):
    return _write_mnist_like(tmp_path, rng, "mnist", "MNIST")


def write_fashion_mnist(tmp_path, rng):
    return _write_mnist_like(tmp_path, rng, "fashion_mnist", "FashionMNIST")


# --- ImageFolder: path/<split>/<class>/*.png ----------------------------------------------------------

IMAGE_SIZE = 8
FOLDER_CLASSES = ["cat", "dog", "frog"]  # ImageFolder labels classes in sorted order: 0, 1, 2


def _write_folder(folder: Path, counts, rng):
    """PNGs, mostly 8x8 and some larger (resized on load); returns them as the loader should give them."""
    xs, ys = [], []
    for label, (cls, n) in enumerate(zip(FOLDER_CLASSES, counts)):
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            h, w = (IMAGE_SIZE, IMAGE_SIZE) if i % 3 else (IMAGE_SIZE + 3, IMAGE_SIZE + 5)
            path = folder / cls / f"{i:03d}.png"  # sorted names: the loader's order within a class
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            img = Image.open(path).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            xs.append(np.asarray(img).transpose(2, 0, 1) / 255.0)
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def write_imagefolder(tmp_path: Path, rng) -> Written:
    path = tmp_path / "images"
    x_tr, y_tr = _write_folder(path / "train", [12, 8, 5], rng)
    x_te, y_te = _write_folder(path / "test", [3, 3, 3], rng)
    return Written(
        {"name": "imagefolder", "path": str(path), "image_size": IMAGE_SIZE},
        x_tr,
        y_tr,
        x_te,
        y_te,
        len(FOLDER_CLASSES),
        True,
    )


WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "mnist": write_mnist,
    "fashion_mnist": write_fashion_mnist,
    "imagefolder": write_imagefolder,
}
TORCHVISION = ["cifar10", "cifar100", "svhn", "mnist", "fashion_mnist"]
MD5_CHECKED = {"cifar10", "cifar100", "svhn"}


@pytest.fixture
def written(request, tmp_path, monkeypatch):
    name = request.param
    if name in MD5_CHECKED:
        # The CIFAR and SVHN loaders compare md5 sums with those of the real, multi-megabyte files,
        # which tiny test files cannot match. Only the checksum is skipped: the file must still exist
        # (torchvision's own check without an md5), and everything after it is the real parsing code.
        def exists_only(fpath, md5=None):
            return check_integrity(fpath)

        monkeypatch.setattr(tv_cifar, "check_integrity", exists_only)
        monkeypatch.setattr(tv_svhn, "check_integrity", exists_only)
    return WRITERS[name](tmp_path, np.random.default_rng(sum(map(ord, name))))


every_dataset = pytest.mark.parametrize("written", list(WRITERS), indirect=True)


def _counts(y, k):
    return np.bincount(np.asarray(y), minlength=k)


def _normalised(x, train_x):
    """What build_data should give for raw images ``x``: normalised by the training split's channel stats."""
    mean = train_x.mean(axis=(0, 2, 3), keepdims=True)
    std = train_x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return (x - mean) / std


# --- the tests ----------------------------------------------------------------------------------------


@every_dataset
def test_source_parses_the_files_exactly(written):
    raw = SOURCES[written.cfg["name"]](DataConfig(**written.cfg))
    for part in ("train", "test"):
        x, y = getattr(raw, f"x_{part}"), getattr(raw, f"y_{part}")
        want_x, want_y = getattr(written, f"x_{part}"), getattr(written, f"y_{part}")
        assert x.dtype == np.float32 and x.shape == want_x.shape
        np.testing.assert_allclose(x, want_x, atol=1e-6)  # pixel layout: channel, row and column order
        np.testing.assert_array_equal(y, want_y)
    assert raw.x_val is None and raw.usual_augment == written.augment


@every_dataset
def test_splits_shapes_labels_and_provenance(written):
    w = written
    data = build_data(DataConfig(**w.cfg))
    n, n_test, sample = len(w.y_train), len(w.y_test), w.x_train.shape[1:]
    assert data.input_shape == sample and data.num_classes == w.num_classes
    assert data.input_augment is w.augment
    for split in (data.train, data.val, data.test):
        assert split.x.ndim == 4 and tuple(split.x.shape[1:]) == sample
        assert split.x.dtype.is_floating_point and str(split.y.dtype) == "torch.int64"
        assert len(split.x) == len(split.y) == len(split.ids)
        assert int(split.y.min()) >= 0 and int(split.y.max()) < data.num_classes

    # train and val partition the written training data; test is the written test split, in order
    assert not set(data.train.ids) & set(data.val.ids)
    assert sorted(np.concatenate([data.train.ids, data.val.ids])) == list(range(n))
    np.testing.assert_array_equal(data.test.ids, np.arange(n_test))
    np.testing.assert_array_equal(data.train.y.numpy(), w.y_train[data.train.ids])
    np.testing.assert_array_equal(data.val.y.numpy(), w.y_train[data.val.ids])
    np.testing.assert_array_equal(data.test.y.numpy(), w.y_test)
    k = w.num_classes
    assert (_counts(data.train.y, k) + _counts(data.val.y, k) == _counts(w.y_train, k)).all()
    assert (_counts(data.test.y, k) == _counts(w.y_test, k)).all()

    # val holds val_fraction of every class (to within one image)
    assert len(data.val) == round(0.2 * n)
    assert (np.abs(_counts(data.val.y, k) - 0.2 * _counts(w.y_train, k)) < 1 + 1e-9).all()

    # pixels follow their ids, normalised with the training split's per-channel statistics
    train_x = w.x_train[data.train.ids]
    np.testing.assert_allclose(data.train.x.numpy(), _normalised(train_x, train_x), atol=1e-4)
    np.testing.assert_allclose(data.val.x.numpy(), _normalised(w.x_train[data.val.ids], train_x), atol=1e-4)
    np.testing.assert_allclose(data.test.x.numpy(), _normalised(w.x_test, train_x), atol=1e-4)


@every_dataset
def test_n_train_is_a_fixed_stratified_subset(written):
    w = written
    full = build_data(DataConfig(**w.cfg))
    n_full, n_train, k = len(full.train), len(full.train) // 2 + 1, w.num_classes
    sub = build_data(DataConfig(**w.cfg, n_train=n_train))
    again = build_data(DataConfig(**w.cfg, n_train=n_train))

    assert len(sub.train) == n_train
    assert set(sub.train.ids) <= set(full.train.ids)
    proportional = _counts(full.train.y, k) * n_train / n_full
    assert (np.abs(_counts(sub.train.y, k) - proportional) < 1 + 1e-9).all()
    # the same config gives the same subset, and val/test do not depend on n_train
    np.testing.assert_array_equal(sub.train.ids, again.train.ids)
    assert (sub.train.x == again.train.x).all() and (sub.train.y == again.train.y).all()
    for part in ("val", "test"):
        np.testing.assert_array_equal(getattr(sub, part).ids, getattr(full, part).ids)
        assert (getattr(sub, part).x == getattr(full, part).x).all()
    # a subset sample is the very same normalised tensor as in the full training split
    row = {i: r for r, i in enumerate(full.train.ids)}
    assert (sub.train.x == full.train.x[[row[i] for i in sub.train.ids]]).all()
    # another subset_seed draws another subset, just as stratified
    other = build_data(DataConfig(**w.cfg, n_train=n_train, subset_seed=1))
    assert list(other.train.ids) != list(sub.train.ids)
    assert (np.abs(_counts(other.train.y, k) - proportional) < 1 + 1e-9).all()


@pytest.mark.parametrize("name", TORCHVISION)
def test_missing_dataset_without_download_is_a_config_error(name, tmp_path):
    with pytest.raises(ConfigError, match="data.download") as err:
        build_data(DataConfig(name=name, root=str(tmp_path / "empty"), download=False))
    assert "data.root" in str(err.value) and name in str(err.value)


def test_real_md5_check_rejects_files_that_are_not_the_real_ones(tmp_path):
    written = write_cifar10(tmp_path, np.random.default_rng(0))  # no checksum patch here
    with pytest.raises(ConfigError, match="data.download"):
        build_data(DataConfig(**written.cfg))


def test_cifar_files_are_python2_pickles(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))
    path = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:  # as CIFAR's own page reads them
        assert {b"data", b"labels", b"batch_label", b"filenames"} == set(pickle.load(f, encoding="bytes"))
    with open(path, "rb") as f:  # as torchvision reads them
        assert "data" in pickle.load(f, encoding="latin1")


def test_imagefolder_missing_root_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        build_data(DataConfig(name="imagefolder", path=str(tmp_path / "nowhere"), image_size=IMAGE_SIZE))


def test_imagefolder_val_folder_is_the_val_split(tmp_path):
    rng = np.random.default_rng(1)
    w = write_imagefolder(tmp_path, rng)
    x_val, y_val = _write_folder(Path(w.cfg["path"]) / "val", [2, 2, 2], rng)
    data = build_data(DataConfig(**w.cfg))
    assert len(data.train) == len(w.y_train)  # nothing held out of train when val/ exists
    np.testing.assert_array_equal(data.val.y.numpy(), y_val)
    np.testing.assert_allclose(data.val.x.numpy(), _normalised(x_val, w.x_train), atol=1e-4)


def test_imagefolder_splits_need_the_same_classes(tmp_path):
    w = write_imagefolder(tmp_path, np.random.default_rng(2))
    (Path(w.cfg["path"]) / "test" / FOLDER_CLASSES[-1]).rename(Path(w.cfg["path"]) / "test" / "zebra")
    with pytest.raises(ConfigError, match="same class folders"):
        build_data(DataConfig(**w.cfg))
