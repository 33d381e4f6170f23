"""ImageFolder data read batch by batch (``data.stream``): for folders larger than memory.

A :class:`StreamSplit` holds file paths and labels only. Its batches come from a torch
``DataLoader`` whose workers decode each image exactly as the in-memory path does (torchvision's
loader, ``Resize((s, s))``, ``ToTensor``), normalise it, and apply the input augmentation
(crop by up to 4 pixels with zero fill, horizontal flip) there, not in the training loop.

Determinism: the augmentation of the sample at position ``p`` of an epoch's order is drawn from
a generator seeded with ``(epoch seed, p)``, where the engine draws the epoch seed from the run's
data generator. The draws therefore depend neither on the number of workers nor on which worker
reads a sample, and a run resumed after epoch k replays an uninterrupted one exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt
import torch

from ..config import ConfigError

PAD = 4  # the crop's zero padding, as augment_inputs
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit, 32-bit and float pixels: RGB would clip


class UnreadableImage(RuntimeError):
    """An image that failed to decode while a run read it (the up-front check passed it): names the file."""

    def __init__(self, path: str, reason: str, resume: Optional[str] = None):
        super().__init__(path, reason)
        self.path, self.reason, self.resume = path, reason, resume  # resume: the exact flags, when known

    def __str__(self) -> str:
        rerun = f"rerun with {self.resume}" if self.resume else "rerun (--resume, if you gave --checkpoint-dir)"
        return (
            f"data.path: the image {self.path} failed to decode during the run ({self.reason}); replace it with "
            f"a readable image (removing it changes the splits) and {rerun}"
        )


def _reason(err: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL can read"
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a readable image by what is cheap to check (PIL opens it and verifies its header
    and, for PNG, every chunk's CRC; nothing is decoded), or None. A JPEG cut short can still pass."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            if not f.read(1):
                return "an empty file (0 bytes)"
        with Image.open(path) as im:
            mode = im.mode
            im.verify()
    except Exception as err:
        return _reason(err)
    if mode in WIDE_MODES:
        return f"mode {mode} (16-bit, 32-bit or float pixels), which reading as 8-bit RGB would clip; save it as 8-bit"
    return None


def collate(items: list[Union[torch.Tensor, UnreadableImage]]) -> Union[torch.Tensor, UnreadableImage]:
    """A batch of images, or the first :class:`UnreadableImage` among them (raised by the reader, not a worker:
    torch would wrap a worker's exception in its traceback)."""
    bad = [x for x in items if isinstance(x, UnreadableImage)]
    return bad[0] if bad else torch.utils.data.default_collate(items)


class _Images(torch.utils.data.Dataset):
    """Items ``(index, seed or None)`` -> one normalised (C, H, W) image, augmented when seeded."""

    def __init__(
        self, paths: Sequence[str], size: int, mean: Union[float, np.ndarray] = 0.0, std: Union[float, np.ndarray] = 1.0
    ) -> None:
        self.paths, self.size, self.mean, self.std = list(paths), size, mean, std
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, i: int) -> np.ndarray:
        from torchvision.datasets.folder import default_loader

        from ._sources import folder_transform

        if self._transform is None:
            self._transform = folder_transform(self.size)
        try:
            return self._transform(default_loader(self.paths[i])).numpy()
        except Exception as err:  # a truncated or damaged file: named, in one line
            raise UnreadableImage(self.paths[i], _reason(err)) from None

    def __getitem__(self, item: tuple[int, Optional[tuple[int, int]]]) -> Union[torch.Tensor, UnreadableImage]:
        """The image (a tensor), or the :class:`UnreadableImage` error (returned: see :func:`collate`)."""
        i, seed = item
        try:
            x = (self.decode(i) - self.mean) / self.std
        except UnreadableImage as err:
            return err
        if seed is not None:
            x = crop_flip(x, np.random.default_rng(list(seed)))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = PAD) -> np.ndarray:
    """Shift one (C, H, W) image by up to ``pad`` pixels on each axis (zero fill), flip half the time."""
    out = np.zeros_like(x)
    dy, dx = rng.integers(-pad, pad + 1, 2)
    h, w = x.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out[:, :, ::-1] if rng.random() < 0.5 else out


def _seed_worker(worker_id: int) -> None:
    """Per-worker seeding of numpy and torch from the loader's base seed (the samples' own draws are
    seeded per sample, so nothing depends on it; libraries that draw at random stay reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    torch.manual_seed(seed)


class StreamSplit:
    """A split of image files read on demand; the same interface as the in-memory ``Split``."""

    streams = True

    def __init__(
        self,
        paths: Sequence[str],
        y: torch.Tensor,
        ids: np.ndarray,
        size: int,
        mean: np.ndarray,
        std: np.ndarray,
        workers: int = 0,
        device: Optional[torch.device] = None,
    ):
        self.paths, self.y, self.ids = list(paths), y, ids
        self.size, self.mean, self.std, self.workers = size, mean, std, workers
        self.device = device or torch.device("cpu")
        self.images = _Images(self.paths, size, mean, std)

    def __len__(self) -> int:
        return len(self.y)

    def _like(self, paths: Sequence[str], y: torch.Tensor, ids: np.ndarray, device: torch.device) -> StreamSplit:
        return StreamSplit(paths, y, ids, self.size, self.mean, self.std, self.workers, device)

    def to(self, device: Union[str, torch.device]) -> StreamSplit:
        return self._like(self.paths, self.y.to(device), self.ids, torch.device(device))

    def subset(self, idx: npt.ArrayLike) -> StreamSplit:
        idx = np.asarray(idx)
        return self._like([self.paths[i] for i in idx], self.y[torch.as_tensor(idx)], self.ids[idx], self.device)

    def take(self, idx: npt.ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``idx``, decoded here, not augmented (a pseudo-validation batch)."""
        x = collate([self.images[(int(i), None)] for i in np.asarray(idx)])
        if isinstance(x, UnreadableImage):
            raise x
        return x.to(self.device), self.y[torch.as_tensor(np.asarray(idx), device=self.y.device)]

    def batches(
        self, order: npt.ArrayLike, batch_size: int, augment_seed: Optional[int] = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` on the split's device for consecutive chunks of ``order``, read by the
        DataLoader's workers; ``augment_seed``: crop and flip each sample, seeded by its position."""
        order = np.asarray(order)
        items = [(int(i), None if augment_seed is None else (augment_seed, p)) for p, i in enumerate(order)]
        chunks = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
        loader = torch.utils.data.DataLoader(
            self.images,
            batch_sampler=chunks,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker if self.workers else None,
            collate_fn=collate,
        )
        cuda = self.device.type == "cuda"
        for chunk, x in zip(chunks, loader):
            if isinstance(x, UnreadableImage):
                raise x
            idx = torch.as_tensor([i for i, _ in chunk], device=self.y.device)
            yield x.to(self.device, non_blocking=cuda), self.y[idx]


def sample_stats(images: _Images, idx: np.ndarray, limit: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over up to ``limit`` training images (a fixed sample): the streaming
    path's normalisation, where the in-memory path uses the whole training split."""
    pick = idx if len(idx) <= limit else np.random.default_rng(seed).choice(idx, limit, replace=False)
    n, total, squares = 0, np.zeros(3), np.zeros(3)
    for i in pick:
        try:
            x = images.decode(int(i)).astype(np.float64)
        except UnreadableImage as err:
            raise ConfigError(
                f"data.path: {err.path} is not a readable image ({err.reason}); replace or remove it"
            ) from None
        n += x[0].size
        total = total + x.sum(axis=(1, 2))
        squares = squares + (x**2).sum(axis=(1, 2))
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0)) + 1e-6
    shape = (-1, 1, 1)
    return mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32)
