"""Raw data sources: each returns numpy arrays, images as (N, C, H, W) floats in [0, 1].

``digits`` is scikit-learn's bundled 8x8 digits (offline). ``npz`` is the user's own file, and
:func:`load_user` reads what a user's own builder returns (``data.name: module:attr``).
The torchvision datasets go through torchvision's real loaders; concurrent downloads on one
node are serialised by a file lock in ``data.root``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from ..config import ConfigError, DataConfig

if TYPE_CHECKING:
    import torch
    from numpy.lib.npyio import NpzFile
    from PIL import Image

T = TypeVar("T")


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
    paths: Optional[dict[str, list[str]]] = None  # streaming: {part: file paths}; x_<part> then hold indices into them


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
    if x[0].size == 0:
        raise ConfigError(f"{where}: {key} has samples of shape {x.shape[1:]}, with no values; give non-empty samples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"{where}: {key} has dtype {x.dtype}; expected real numbers (int or float)")
    _check_finite(key, x, where)
    return x.astype(np.float32)


F32_MAX = float(np.finfo(np.float32).max)


def _check_finite(key: str, x: np.ndarray, where: str) -> None:
    """NaN, infinities and values beyond float32 (what the data become) are refused, naming the first sample."""
    for bad, what in ((np.isnan, "NaN"), (np.isinf, "infinite values")):
        hit = bad(x).reshape(len(x), -1).any(axis=1) if np.issubdtype(x.dtype, np.floating) else None
        if hit is not None and hit.any():
            raise ConfigError(
                f"{where}: {key} contains {what} ({int(hit.sum())} samples, the first is sample "
                f"{int(hit.argmax())}); clean the data first (drop or fill those samples)"
            )
    top = float(np.abs(x).max())
    if top > F32_MAX:
        raise ConfigError(
            f"{where}: {key} has values up to {top:.3g}, beyond float32's range ({F32_MAX:.3g}); rescale the data"
        )


def _npz_labels(key: str, y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise ConfigError(
            f"{where}: {key} has shape {y.shape}, but its x has {n} rows; give one integer label per sample"
        )
    fix = "save the class index of each sample, 0..K-1"
    if np.issubdtype(y.dtype, np.floating):
        odd = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) >= 2**31)
        if odd.any():
            raise ConfigError(
                f"{where}: {key} must hold integer class labels, but it has {y[odd][:3].tolist()} "
                f"(dtype {y.dtype}); {fix}"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{where}: {key} must hold integer class labels, got dtype {y.dtype}; {fix}")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ConfigError(f"{where}: {key} has negative labels (min {y.min()}); labels are 0..K-1")
    return y


def _array(blob: NpzFile, key: str, path: str) -> np.ndarray:
    try:
        arr = blob[key]
        if not isinstance(arr, np.ndarray):  # numpy hands a member without the .npy header back as bytes
            raise ValueError("the member is not an .npy array")
        return arr
    except ValueError as err:
        if "pickle" not in str(err):  # a member that is not an .npy array
            raise ConfigError(
                f"data.path = {path!r}: {key} is damaged ({_one_line(err)}); write the file again with {NPZ_WRITE}"
            ) from None
        # object arrays: numpy refuses to unpickle them (allow_pickle=False), and so do we
        raise ConfigError(
            f"data.path = {path!r}: {key} is not a readable numeric array (it holds Python objects); "
            "save numbers, not Python objects"
        ) from None
    except Exception as err:  # a damaged member: a bad CRC, a truncated or undecompressable entry
        raise ConfigError(
            f"data.path = {path!r}: {key} is damaged ({_one_line(err)}); write the file again with {NPZ_WRITE}"
        ) from None


NPZ_WRITE = "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _not_npz(path: str) -> Optional[str]:
    """What ``path`` is when it is not an npz (a zip of .npy arrays), by its first bytes; None: a zip."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "it is one .npy array (numpy.save), not an .npz of named arrays"
    try:
        head.decode("utf-8")
        return "it is a text file, not an .npz (a zip of .npy arrays)"
    except UnicodeDecodeError:
        return f"it is not an .npz (a zip of .npy arrays): it starts with {head[:8]!r}"


def _open_npz(path: str) -> NpzFile:
    """The npz at ``path``, opened without unpickling; a file of another kind is one ConfigError line."""
    what = _not_npz(path)
    if what is None:
        try:
            blob = np.load(path, allow_pickle=False)
            if hasattr(blob, "files") and all(n.endswith(".npy") for n in blob.zip.namelist()):
                return blob
            what = f"it is a zip of {blob.zip.namelist()[:3]}, not of .npy arrays"
        except Exception as err:  # a truncated or damaged zip
            what = f"a damaged or truncated zip ({_one_line(err)})"
    raise ConfigError(f"data.path = {path!r}: not a readable .npz: {what}; write it with {NPZ_WRITE}")


def load_npz(cfg: DataConfig) -> Raw:
    path = cfg.path
    assert path is not None, "DataConfig checks that npz has a path"
    if not Path(path).is_file():
        raise ConfigError(f"data.path = {path!r}: no such file; give an .npz with keys {', '.join(_NPZ_REQUIRED)}")
    blob = _open_npz(path)  # object arrays (pickles) are refused, and so is a file of another kind
    keys = set(blob.files)
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


def _numpy(v: Union[torch.Tensor, npt.ArrayLike]) -> np.ndarray:
    return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def _read_split(cfg: DataConfig, where: str, part: str, obj: Any) -> tuple[np.ndarray, np.ndarray]:
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


def load_user(cfg: DataConfig, out: Any) -> Raw:
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


def _locked(cfg: DataConfig, build: Callable[[str, bool], T]) -> T:
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


def _chw(x: npt.ArrayLike) -> np.ndarray:
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


def folder_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """How an ImageFolder image becomes a tensor, in memory and streamed alike: resize, then [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])


def _check_classes(folder: Path, found: list[str], classes: Optional[list[str]]) -> None:
    if classes is not None and found != classes:
        raise ConfigError(
            f"data.path: {folder} has classes {found}, but train/ has {classes}; "
            "every split needs the same class folders"
        )


def _read_folder(
    root: Path, part: str, size: int, workers: int, classes: Optional[list[str]] = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, classes) of ``root/part`` decoded into memory, after the up-front check of every file."""
    import torch

    from ._stream import _Images, collate

    paths, y, found = _listing(root / part, classes)
    check_images(root, paths)
    items = [(i, None) for i in range(len(paths))]
    chunks = [items[s : s + 256] for s in range(0, len(items), 256)]
    loader = torch.utils.data.DataLoader(
        _Images(paths, size), batch_sampler=chunks, num_workers=workers, collate_fn=collate
    )
    xs = []
    for x in loader:
        if not isinstance(x, torch.Tensor):  # passed the check, failed to decode
            raise _unreadable(root, x.path, x.reason)
        xs.append(x)
    return torch.cat(xs).numpy(), y, found


def _rel(root: Path, path: str) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else path


def check_images(root: Path, paths: list) -> None:
    """Every file opens as an image and its header verifies (see ``image_problem``); else one line
    naming the first bad file and how many there are."""
    from ._stream import image_problem

    bad = [(p, why) for p in paths if (why := image_problem(p)) is not None]
    if bad:
        raise _unreadable(root, *bad[0], f" (and {len(bad) - 1} more files)" if len(bad) > 1 else "")


def _unreadable(root: Path, path: str, reason: str, more: str = "") -> ConfigError:
    return ConfigError(
        f"data.path = {str(root)!r}: {_rel(root, path)} is not a readable image ({reason}){more}; replace or remove it"
    )


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
    x_tr, y_tr, classes = _read_folder(root, "train", cfg.image_size, cfg.num_workers)
    raw = Raw(x_tr, y_tr, usual_augment=True, num_classes=len(classes))
    for part in ("test", "val"):
        if (root / part).is_dir():
            x, y, _ = _read_folder(root, part, cfg.image_size, cfg.num_workers, classes)
            setattr(raw, f"x_{part}", x)
            setattr(raw, f"y_{part}", y)
    return raw


def _listing(folder: Path, classes: Optional[list[str]] = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels, classes) of an ImageFolder tree, without reading an image."""
    import torchvision.datasets as tvd

    try:
        ds = tvd.ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as err:  # a class folder with no image files, an unreadable folder
        raise ConfigError(
            f"data.path = {str(folder.parent)!r}: {folder.name}/: {' '.join(str(err).split())[:200]}; every class "
            "folder needs image files (or remove it)"
        ) from None
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
    check_images(root, paths)
    raw = Raw(np.arange(len(paths)), y_tr, usual_augment=True, num_classes=len(classes), paths={"train": paths})
    for part in ("test", "val"):
        if (root / part).is_dir():
            part_paths, y, _ = _listing(root / part, classes)
            check_images(root, part_paths)
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
