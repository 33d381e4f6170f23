"""Raw data sources: each returns numpy arrays, images as (N, C, H, W) floats in [0, 1].

``digits`` is scikit-learn's bundled 8x8 digits (offline). ``npz`` is the user's own file, and
:func:`load_user` reads what a user's own builder returns (``data.name: module:attr``).
The torchvision datasets go through torchvision's real loaders; concurrent downloads on one
node are serialised by a file lock in ``data.root``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import ConfigError, DataConfig


@dataclass
class Raw:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None
    usual_augment: bool = False  # crop+flip is the usual input augmentation
    scalar_norm: bool = False  # one mean/std for all features (signals whose positions are alike)
    num_classes: Optional[int] = None  # the dataset's own class count; None (npz): from the labels
    paths: Optional[dict] = None  # streaming: {part: file paths}; x_<part> then hold indices into them


def load_digits(cfg: DataConfig) -> Raw:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return Raw(d.images[:, None].astype(np.float32) / 16.0, d.target.astype(np.int64), num_classes=10)


_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def _npz_images(key: str, x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as float32 samples (N, C, H, W) or (N, D); ``where`` names the source in messages."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise ConfigError(f"{where}: {key} has shape {x.shape}; expected (N,C,H,W), (N,H,W) or (N,D)")
    if len(x) == 0:
        raise ConfigError(f"{where}: {key} has 0 rows; give at least one sample per split")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{where}: {key} has dtype {x.dtype}; expected real numbers (int or float)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(f"{where}: {key} contains NaN or infinite values; clean the data first")
    return x


def _npz_labels(key: str, y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(
            f"{where}: {key} has shape {y.shape}, but its x has {n} rows; give one integer label per sample"
        )
    whole = np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
    if not np.issubdtype(y.dtype, np.integer) and not whole:
        raise ConfigError(f"{where}: {key} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ConfigError(f"{where}: {key} has negative labels (min {y.min()}); labels are 0..K-1")
    return y


def _array(blob, key: str, path: str) -> np.ndarray:
    try:
        return blob[key]
    except ValueError as err:  # object arrays: numpy refuses to unpickle them (allow_pickle=False)
        raise ConfigError(
            f"data.path = {path!r}: {key} is not a readable numeric array ({err}); save numbers, not Python objects"
        ) from None


def load_npz(cfg: DataConfig) -> Raw:
    path = cfg.path
    assert path is not None, "DataConfig checks that npz has a path"
    if not Path(path).is_file():
        raise ConfigError(f"data.path = {path!r}: no such file; give an .npz with keys {', '.join(_NPZ_REQUIRED)}")
    try:
        blob = np.load(path, allow_pickle=False)  # object arrays (pickles) are refused here
        keys = set(blob.files)
    except Exception as err:
        raise ConfigError(f"data.path = {path!r}: not a readable .npz ({err})") from None
    missing = [k for k in _NPZ_REQUIRED if k not in keys]
    if missing:
        raise ConfigError(
            f"data.path = {path!r}: missing keys {missing}; an npz needs {', '.join(_NPZ_REQUIRED)} "
            f"(and optionally x_val, y_val); it has {sorted(keys)}"
        )
    if ("x_val" in keys) != ("y_val" in keys):
        raise ConfigError(f"data.path = {path!r}: give both x_val and y_val, or neither")
    arrays = {}
    for part in ("train", "test", "val"):
        if f"x_{part}" in keys:
            where = f"data.path = {path!r}"
            x = _npz_images(f"x_{part}", _array(blob, f"x_{part}", path), where)
            arrays[f"x_{part}"] = x
            arrays[f"y_{part}"] = _npz_labels(f"y_{part}", _array(blob, f"y_{part}", path), len(x), where)
    shapes = {arrays[k].shape[1:] for k in arrays if k.startswith("x_")}
    if len(shapes) > 1:
        raise ConfigError(f"data.path = {path!r}: x_train, x_test (and x_val) have different sample shapes {shapes}")
    return Raw(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        arrays.get("x_val"),
        arrays.get("y_val"),
    )


USER_SPLITS = ("train", "test", "val")


def _numpy(v) -> np.ndarray:
    return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _read_split(cfg: DataConfig, where: str, part: str, obj) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) arrays of one split a user's builder returned: a pair ``(x, y)`` or a torch
    ``Dataset`` whose items are ``(x, y)`` (read once, in batches)."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = _numpy(obj[0]), _numpy(obj[1])
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        import torch

        try:
            loader = torch.utils.data.DataLoader(obj, batch_size=512, num_workers=cfg.num_workers)
            xs, ys = zip(*loader)
            x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
        except Exception as err:
            text = " ".join(str(err).split())[:200]
            raise ConfigError(
                f"{where}: reading its {part} Dataset failed ({type(err).__name__}: {text}); its items must be "
                "(x, y): x a tensor or array of one shape, y an integer label"
            ) from None
    else:
        raise ConfigError(
            f"{where}: the {part} split is a {type(obj).__name__}; give a torch Dataset of (x, y) items "
            "or a pair (x, y)"
        )
    x = _npz_images(f"the {part} split's x", x, where)
    return x, _npz_labels(f"the {part} split's y", y, len(x), where)


def load_user(cfg: DataConfig, out) -> Raw:
    """A user's builder's output as :class:`Raw`: a mapping ``{"train": ..., "test": ..., "val": ...}``
    (test and val optional: held out of train by ``data.test_fraction`` / ``data.val_fraction``), or
    one split (the train split). A train Dataset with a ``classes`` list declares the class count."""
    if isinstance(out, Raw):
        return out
    where = f"data.name = {cfg.name!r}"
    if not isinstance(out, dict):
        out = {"train": out}
    unknown = [k for k in out if k not in USER_SPLITS]
    if unknown or out.get("train") is None:
        raise ConfigError(
            f"{where}: the builder returned splits {list(out)}; return a dict with train, and optionally test and val"
        )
    arrays = {p: _read_split(cfg, where, p, out[p]) for p in USER_SPLITS if out.get(p) is not None}
    shapes = {x.shape[1:] for x, _ in arrays.values()}
    if len(shapes) > 1:
        raise ConfigError(f"{where}: the splits have different sample shapes {sorted(shapes)}; give one shape")
    classes = getattr(out["train"], "classes", None)
    known = len(classes) if isinstance(classes, (list, tuple)) else None
    top = max(int(y.max()) for _, y in arrays.values())
    if known is not None and top >= known:
        raise ConfigError(
            f"{where}: a label is {top}, but the train Dataset declares {known} classes; labels are 0..{known - 1}"
        )
    raw = Raw(*arrays["train"], num_classes=known)
    for part in ("test", "val"):
        if part in arrays:
            setattr(raw, f"x_{part}", arrays[part][0])
            setattr(raw, f"y_{part}", arrays[part][1])
    return raw


def _locked(cfg: DataConfig, build):
    """Build a torchvision dataset; downloads by concurrent workers on one node take turns."""
    from filelock import FileLock

    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".adalase_tune.download.lock")):
        try:
            return build(str(root), cfg.download)
        except RuntimeError as err:
            if "not found" in str(err).lower() or "corrupted" in str(err).lower():
                raise ConfigError(
                    f"data.root = {cfg.root!r}: {cfg.name} not found there ({err}); set data.download=true to fetch it"
                ) from None
            raise


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _chw(x) -> np.ndarray:
    x = np.asarray(x)
    return (x[:, None] if x.ndim == 3 else x).astype(np.float32) / 255.0


def load_torchvision(cfg: DataConfig) -> Raw:
    import torchvision.datasets as tvd

    name = cfg.name
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        tr = _locked(cfg, lambda r, d: cls(r, train=True, download=d))
        te = _locked(cfg, lambda r, d: cls(r, train=False, download=d))
        return Raw(
            _hwc(tr.data),
            np.asarray(tr.targets),
            _hwc(te.data),
            np.asarray(te.targets),
            usual_augment=True,
            num_classes=10 if name == "cifar10" else 100,
        )
    if name == "svhn":
        tr = _locked(cfg, lambda r, d: tvd.SVHN(r, split="train", download=d))
        te = _locked(cfg, lambda r, d: tvd.SVHN(r, split="test", download=d))
        return Raw(
            _chw(tr.data),
            np.asarray(tr.labels),
            _chw(te.data),
            np.asarray(te.labels),
            usual_augment=True,
            num_classes=10,
        )
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
    tr = _locked(cfg, lambda r, d: cls(r, train=True, download=d))
    te = _locked(cfg, lambda r, d: cls(r, train=False, download=d))
    return Raw(_chw(tr.data.numpy()), tr.targets.numpy(), _chw(te.data.numpy()), te.targets.numpy(), num_classes=10)


def folder_transform(size: int):
    """How an ImageFolder image becomes a tensor, in memory and streamed alike: resize, then [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])


def _check_classes(folder: Path, found: list, classes) -> None:
    if classes is not None and found != classes:
        raise ConfigError(
            f"data.path: {folder} has classes {found}, but train/ has {classes}; "
            "every split needs the same class folders"
        )


def _read_folder(folder: Path, size: int, workers: int, classes=None):
    import torch
    import torchvision.datasets as tvd

    ds = tvd.ImageFolder(str(folder), transform=folder_transform(size))
    _check_classes(folder, ds.classes, classes)
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers)
    xs, ys = zip(*loader)
    return torch.cat(xs).numpy(), torch.cat(ys).numpy(), ds.classes


def load_imagefolder(cfg: DataConfig) -> Raw:
    assert cfg.path is not None, "DataConfig checks that imagefolder has a path"
    root = Path(cfg.path)
    if not (root / "train").is_dir():
        raise ConfigError(
            f"data.path = {cfg.path!r}: expected an ImageFolder root with train/<class>/*.png "
            "(and test/, optionally val/)"
        )
    if streams(cfg, root):
        return _list_folders(root)
    x_tr, y_tr, classes = _read_folder(root / "train", cfg.image_size, cfg.num_workers)
    raw = Raw(x_tr, y_tr, usual_augment=True, num_classes=len(classes))
    for part in ("test", "val"):
        if (root / part).is_dir():
            x, y, _ = _read_folder(root / part, cfg.image_size, cfg.num_workers, classes)
            setattr(raw, f"x_{part}", x)
            setattr(raw, f"y_{part}", y)
    return raw


def _listing(folder: Path, classes=None):
    """(paths, labels, classes) of an ImageFolder tree, without reading an image."""
    import torchvision.datasets as tvd

    ds = tvd.ImageFolder(str(folder))
    _check_classes(folder, ds.classes, classes)
    return [p for p, _ in ds.samples], np.asarray([c for _, c in ds.samples], dtype=np.int64), ds.classes


def streams(cfg: DataConfig, root: Path) -> bool:
    """``data.stream``, or (when null) whether the decoded images would exceed ``stream_above_mb``."""
    if cfg.stream is not None:
        return cfg.stream
    files = sum(1 for part in ("train", "val", "test") for f in (root / part).rglob("*") if f.is_file())
    decoded_mb = files * 3 * cfg.image_size**2 * 4 / 2**20
    if decoded_mb <= cfg.stream_above_mb:
        return False
    import sys

    print(
        f"adalase-tune: data.path = {cfg.path!r} decodes to about {decoded_mb:,.0f} MB at image_size "
        f"{cfg.image_size} (> data.stream_above_mb = {cfg.stream_above_mb:g}): streaming it "
        f"with {cfg.num_workers} DataLoader workers (data.num_workers)",
        file=sys.stderr,
    )
    return True


def _list_folders(root: Path) -> Raw:
    """The streaming form of an ImageFolder: x_<part> are indices into ``paths[part]``."""
    paths, y_tr, classes = _listing(root / "train")
    raw = Raw(np.arange(len(paths)), y_tr, usual_augment=True, num_classes=len(classes), paths={"train": paths})
    for part in ("test", "val"):
        if (root / part).is_dir():
            part_paths, y, _ = _listing(root / part, classes)
            raw.paths[part] = part_paths  # type: ignore[index]
            setattr(raw, f"x_{part}", np.arange(len(part_paths)))
            setattr(raw, f"y_{part}", y)
    return raw


SOURCES = {
    "digits": load_digits,
    "npz": load_npz,
    "cifar10": load_torchvision,
    "cifar100": load_torchvision,
    "svhn": load_torchvision,
    "mnist": load_torchvision,
    "fashion_mnist": load_torchvision,
    "imagefolder": load_imagefolder,
}
