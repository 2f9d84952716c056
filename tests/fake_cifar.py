"""Tiny CIFAR-10 and CIFAR-100 folders in the official layout (pickled batches of uint8
R, G, B planes), of distinct known images, for the tests of the readers: nothing is fetched."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def image(i: int) -> np.ndarray:
    """A distinct uint8 image [3, 32, 32] whose red pixel (0, 0) is its id."""
    c, r, col = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    img = (i + 37 * c + 5 * r + 11 * col + (r * col) % 7) % 256
    img[0, 0, 0] = i
    return img.astype(np.uint8)


def flat(ids) -> np.ndarray:
    # The documented layout: 1024 red values, then 1024 green, then 1024 blue, each row-major.
    return np.stack([np.concatenate([image(i)[ch].ravel() for ch in range(3)]) for i in ids])


def write_batch(path: Path, ids, label_key: bytes, num_classes: int, protocol: int) -> None:
    batch = {
        b"batch_label": b"tiny",
        b"data": flat(ids),
        label_key: [(3 * i + 1) % num_classes for i in ids],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [i % 20 for i in ids]
    blob = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:  # name numpy's module as the official (numpy 1) files do
        blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray" in blob
    path.write_bytes(blob)


def make_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        write_batch(folder / f"data_batch_{b + 1}", range(20 * b, 20 * b + 20), b"labels", 10, 2)
    write_batch(folder / "test_batch", range(100, 120), b"labels", 10, 2)
    return folder


def make_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    write_batch(folder / "train", range(60), b"fine_labels", 100, pickle.HIGHEST_PROTOCOL)
    write_batch(folder / "test", range(200, 220), b"fine_labels", 100, pickle.HIGHEST_PROTOCOL)
    return folder


GOOD_PIXELS = flat(range(4))  # four well-formed images
