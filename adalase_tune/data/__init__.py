"""Data: a fixed test split, a held-out val split, and a stratified training subset.

``build_data(cfg)`` returns a :class:`DataBundle` of three :class:`Split` s of normalised float
tensors (they sit on the training device), plus the dataset's usual input augmentation.
Every split keeps ``ids``, the sample's index in its source, so provenance can be checked.

Example::

    data = build_data(DataConfig(name="digits", n_train=100))
    data.train.x.shape  # (100, 1, 8, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Optional, Union, cast

import numpy as np
import numpy.typing as npt
import torch

from ..config import ConfigError, DataConfig
from ..ops._translate import shift
from ..registry import Registry
from ._sources import SOURCES, Raw, load_user
from ._splits import stratified_split, stratified_subset
from ._synthetic import load_motifs, load_scrambled_motifs

SPLIT_SEED = 0  # test and val splits are the same for every run
DATASETS: Registry = Registry("data.name", group="adalase_tune.data")
for _name, _load in SOURCES.items():
    DATASETS.register(_name)(_load)
DATASETS.register("motifs")(load_motifs)
DATASETS.register("motifs_scrambled")(load_scrambled_motifs)

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]  # one split's (x, y, ids) before it becomes a Split


@dataclass
class Split:
    """Samples of one split: ``x`` (N, ...) float, ``y`` (N,) int64, ``ids`` their source indices."""

    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray
    streams = False  # the in-memory form (data.stream: StreamSplit)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: npt.ArrayLike) -> Split:
        t = torch.as_tensor(np.asarray(idx))
        return Split(self.x[t.to(self.x.device)], self.y[t.to(self.y.device)], self.ids[np.asarray(idx)])

    def take(self, idx: npt.ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``idx``."""
        t = torch.as_tensor(np.asarray(idx), device=self.y.device)
        return self.x[t], self.y[t]

    def to(self, device: Union[str, torch.device]) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.ids)

    def batches(
        self, order: npt.ArrayLike, batch_size: int, augment_seed: Optional[int] = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` for consecutive chunks of ``order`` (an index array). In memory the
        engine augments the batch itself (``augment_seed`` is for the streaming form)."""
        order = torch.as_tensor(order, device=self.y.device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class DataBundle:
    train: Split  # or a StreamSplit (data.stream), with the same interface
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    input_augment: bool  # crop (translate by up to 4 px) + horizontal flip on training batches
    # the whole training split, kept when each run seed draws its own ``n_train`` subset of it
    # (``data.subset_seed: null``); ``train`` is then the subset of seed 0
    pool: Optional[Split] = None

    def to(self, device: Union[str, torch.device]) -> DataBundle:
        return DataBundle(
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.num_classes,
            self.input_shape,
            self.input_augment,
        )

    def for_seed(self, seed: int) -> DataBundle:
        """The bundle of one run: ``train`` the stratified subset of ``pool`` that ``seed`` draws
        (the same samples as ``build_data`` with ``data.subset_seed = seed``); no pool, no change."""
        if self.pool is None:
            return self
        pick = stratified_subset(self.pool.y.cpu().numpy(), len(self.train), seed)
        return replace(self, train=self.pool.subset(pick), pool=None)


def augment_inputs(x: torch.Tensor, rng: np.random.Generator, pad: int = 4) -> torch.Tensor:
    """The usual CIFAR/SVHN augmentation: random crop with zero padding ``pad`` and flip."""
    n = x.shape[0]
    x = shift(x, 2, rng.integers(-pad, pad + 1, n))
    x = shift(x, 3, rng.integers(-pad, pad + 1, n))
    flip = torch.as_tensor(rng.random(n) < 0.5, device=x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _select_classes(raw: Raw, classes: Sequence[int]) -> Raw:
    known = set(np.unique(raw.y_train).tolist())
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise ConfigError(
            f"data.classes = {list(classes)}: labels {unknown} do not occur in the training data "
            f"(labels present: {sorted(known)})"
        )
    if len(set(classes)) != len(classes):
        raise ConfigError(f"data.classes = {list(classes)}: labels repeat; list each class once")
    remap = {c: i for i, c in enumerate(classes)}
    for part in ("train", "val", "test"):
        x, y = getattr(raw, f"x_{part}"), getattr(raw, f"y_{part}")
        if x is None:
            continue
        keep = np.isin(y, classes)
        setattr(raw, f"x_{part}", x[keep])
        setattr(raw, f"y_{part}", np.array([remap[v] for v in y[keep]], dtype=np.int64))
    return raw


def _class_ids(
    cfg: DataConfig, known: Optional[int], y_tr: np.ndarray, test: Triple, val: Triple
) -> tuple[np.ndarray, Triple, Triple, int]:
    """Labels as class ids 0..K-1. A dataset that declares its classes (``known``) keeps them; the
    labels of user data (npz, a user's builder) are remapped, with a message, when they are not 0..K-1, and val or
    test labels that the training split never has are an error."""
    if known is not None:
        return y_tr, test, val, known
    where = f"data.path = {cfg.path!r}" if cfg.name == "npz" else f"data.name = {cfg.name!r}"
    classes = np.unique(y_tr)
    for name, (_, y, _) in (("val", val), ("test", test)):
        unseen = np.setdiff1d(np.unique(y), classes)
        if len(unseen):
            raise ConfigError(
                f"{where}: the {name} split has labels {unseen[:5].tolist()} that the "
                "training split never has; every class needs training samples (or drop those samples)"
            )
    if len(classes) < 2:
        raise ConfigError(
            f"{where}: the training split has only the label {classes.tolist()}; "
            "a classifier needs at least two classes"
        )
    if classes[0] == 0 and classes[-1] == len(classes) - 1:
        return y_tr, test, val, len(classes)
    import sys

    print(
        f"adalase-tune: labels {classes[:3].tolist()}...{classes[-1]} are not 0..{len(classes) - 1}: remapped to "
        f"class ids in sorted order ({len(classes)} classes)",
        file=sys.stderr,
    )

    def remap(y: np.ndarray) -> np.ndarray:
        return np.searchsorted(classes, y).astype(np.int64)

    return remap(y_tr), (test[0], remap(test[1]), test[2]), (val[0], remap(val[1]), val[2]), len(classes)


def build_data(cfg: DataConfig) -> DataBundle:
    """Load, split, subset and normalise ``cfg.name``; every error comes before training."""
    raw = load_user(cfg, DATASETS.get(cfg.name)(cfg))  # a built-in's Raw, or a user's splits
    if cfg.classes is not None:
        raw = _select_classes(raw, cfg.classes)
    ids = np.arange(len(raw.y_train))
    x_tr, y_tr = raw.x_train, raw.y_train
    if raw.x_test is None:
        kept, held = stratified_split(y_tr, cfg.test_fraction, SPLIT_SEED)
        if len(held) == 0:
            raise ConfigError(
                f"data.test_fraction = {cfg.test_fraction}: holds out no sample of the {len(y_tr)} "
                f"samples; use at least {1 / len(y_tr):.4f}"
            )
        test = (x_tr[held], y_tr[held], ids[held])
        x_tr, y_tr, ids = x_tr[kept], y_tr[kept], ids[kept]
    else:
        test = (raw.x_test, raw.y_test, np.arange(len(raw.x_test)))
    test_part = "train" if raw.x_test is None else "test"  # (streaming) which file list test indexes
    if raw.x_val is None:
        if cfg.val_fraction == 0:
            raise ConfigError(
                f"data.val_fraction = 0, but {cfg.name} has no val split; "
                "hold some training data out (e.g. 0.2): selection needs validation data"
            )
        kept, held = stratified_split(y_tr, cfg.val_fraction, SPLIT_SEED + 1)
        if len(held) == 0:
            raise ConfigError(
                f"data.val_fraction = {cfg.val_fraction}: holds out no sample of the {len(y_tr)} "
                f"training samples; use at least {1 / len(y_tr):.4f}"
            )
        val = (x_tr[held], y_tr[held], ids[held])
        x_tr, y_tr, ids = x_tr[kept], y_tr[kept], ids[kept]
    else:
        val = (raw.x_val, raw.y_val, np.arange(len(raw.x_val)))
    val_part = "train" if raw.x_val is None else "val"
    known = len(cfg.classes) if cfg.classes is not None else raw.num_classes
    y_tr, test, val, num_classes = _class_ids(cfg, known, y_tr, test, val)
    if raw.paths is not None:
        from ._stream import _Images, sample_stats

        mean, std = sample_stats(_Images(raw.paths["train"], cfg.image_size), x_tr)  # a fixed sample
    else:
        mean, std = _stats(x_tr, raw.scalar_norm)  # from the whole training split: the same for every n_train
    if cfg.n_train is not None:
        if cfg.n_train > len(y_tr):
            raise ConfigError(
                f"data.n_train = {cfg.n_train}, but the training split of {cfg.name} has "
                f"{len(y_tr)} samples after holding out val/test; use at most {len(y_tr)} or null"
            )
        pool = (x_tr, y_tr, ids) if cfg.subset_seed is None else None  # each run seed draws from it
        pick = stratified_subset(y_tr, cfg.n_train, 0 if cfg.subset_seed is None else cfg.subset_seed)
        x_tr, y_tr, ids = x_tr[pick], y_tr[pick], ids[pick]
    else:
        pool = None
    augment = raw.usual_augment if cfg.input_augment is None else cfg.input_augment
    if raw.paths is not None:
        return _stream_bundle(
            cfg, raw, (x_tr, y_tr, ids), val, test, (val_part, test_part), num_classes, augment, mean, std, pool
        )
    if augment and x_tr.ndim != 4:
        raise ConfigError(f"data.input_augment = true, but {cfg.name} holds vectors {x_tr.shape[1:]}; set it to false")

    def split(part: str, key: str, x: np.ndarray, y: np.ndarray, i: np.ndarray) -> Split:
        return Split(_normalised(cfg, part, key, x, i, mean, std), torch.from_numpy(np.asarray(y, dtype=np.int64)), i)

    return DataBundle(
        split("train", "x_train", x_tr, y_tr, ids),
        split("val", f"x_{val_part}", *val),
        split("test", f"x_{test_part}", *test),
        num_classes,
        tuple(x_tr.shape[1:]),
        bool(augment),
        split("train", "x_train", *pool) if pool is not None else None,
    )


def _stream_bundle(
    cfg: DataConfig,
    raw: Raw,
    train: Triple,
    val: Triple,
    test: Triple,
    parts: tuple[str, str],
    num_classes: int,
    augment: bool,
    mean: np.ndarray,
    std: np.ndarray,
    pool: Optional[Triple] = None,
) -> DataBundle:
    """Splits of file paths (``data.stream``): the same membership as in memory, read batch by batch."""
    from ._stream import StreamSplit

    assert raw.paths is not None
    files = raw.paths

    def split(triple: Triple, part: str) -> Split:
        x, y, i = triple
        paths = [files[part][j] for j in x]
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
        # DataBundle's fields are typed as the in-memory Split, whose interface StreamSplit has
        return cast(Split, StreamSplit(paths, labels, i, cfg.image_size, mean, std, cfg.num_workers))

    shape = (3, cfg.image_size, cfg.image_size)
    return DataBundle(
        split(train, "train"),
        split(val, parts[0]),
        split(test, parts[1]),
        num_classes,
        shape,
        bool(augment),
        split(pool, "train") if pool is not None else None,
    )


def _stats(x: np.ndarray, scalar: bool = False, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (per feature for vectors; one pair with ``scalar``). numpy's own
    float32 sums, as every committed result was made with; only where they overflow (values near
    3e38) summed again in float64, chunk by chunk. A constant channel gets std 1: centred, not blown up."""
    axes = tuple(range(x.ndim)) if scalar else (0, 2, 3) if x.ndim == 4 else (0,)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=axes, keepdims=True)[0:1]
        std = x.std(axis=axes, keepdims=True)[0:1] + 1e-6
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        count = np.prod([x.shape[a] for a in axes])

        def total(f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
            parts = (f(x[i : i + chunk].astype(np.float64)) for i in range(0, len(x), chunk))
            return sum(p.sum(axis=axes, keepdims=True) for p in parts)

        mean = total(lambda c: c) / count
        std = np.sqrt(total(lambda c: (c - mean) ** 2) / count) + 1e-6
    constant = x.min(axis=axes, keepdims=True) == x.max(axis=axes, keepdims=True)
    return mean.astype(np.float32), np.where(constant, 1.0, std).astype(np.float32)


def _normalised(
    cfg: DataConfig, part: str, key: str, x: np.ndarray, ids: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> torch.Tensor:
    """``(x - mean) / std`` as float32; a value that is not finite there is refused, naming the split, the
    key and the first such sample by its index in ``key`` (``ids``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x - mean) / std
    bad = ~np.isfinite(z).reshape(len(z), -1).all(axis=1)
    if bad.any():
        where = f"data.path = {cfg.path!r}" if cfg.name == "npz" else f"data.name = {cfg.name!r}"
        raise ConfigError(
            f"{where}: the {part} split ({key}) is not finite once normalised by the training split's mean and "
            f"std ({int(bad.sum())} samples, the first is {key}[{int(ids[bad.argmax()])}]); rescale the data "
            "(values near float32's limit 3.4e38 overflow)"
        )
    return torch.from_numpy(z)


__all__ = ["DATASETS", "DataBundle", "Split", "build_data", "augment_inputs", "stratified_subset", "stratified_split"]
