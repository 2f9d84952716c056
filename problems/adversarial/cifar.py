"""The official CIFAR-10 / CIFAR-100 python-pickle releases: download and safe reading.

``read_cifar`` returns the official training and test arrays of one release from its extracted
folder under ``data_dir``, downloading the archive there with torchvision's downloader (md5
checked) when the folder is missing and ``download`` allows it. Every failure (no network, a
corrupt or truncated pickle, a pickle that asks for a global beyond numpy arrays) is a
``UserError`` that names the offline alternative, mnist5k. A download that stalls fails after
``DOWNLOAD_TIMEOUT_S`` without a byte, and a failed download removes the folders it created.
Splitting is ``data.load_dataset``'s.
"""

from __future__ import annotations

import pickle
import shutil
import socket
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bilevel.errors import UserError
from bilevel.paths import check_output_folder


class _CifarSource(NamedTuple):
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    archive: str  # under _CIFAR_URL
    md5: str


_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
DOWNLOAD_TIMEOUT_S = 60.0  # seconds a read of the download may wait for data
_CIFAR = {
    "cifar10": _CifarSource(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "labels", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": _CifarSource(
        "cifar-100-python", ("train",), "test",
        "fine_labels", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}  # fmt: skip


def read_cifar(
    name: str, data_dir: Path, download: bool, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 ``[N, 3072]`` training images, their labels in ``[0, num_classes)``, then the test
    images and labels of ``name`` (``"cifar10"`` or ``"cifar100"``), read from ``data_dir``."""
    source = _CIFAR[name]
    root = data_dir.expanduser()
    if not (root / source.folder).is_dir():
        _download_or_fail(name, source, root, download)
    parts = [
        _read_cifar_batch(root / source.folder / f, source.label_key, num_classes)
        for f in source.train_files
    ]
    x_test, y_test = _read_cifar_batch(
        root / source.folder / source.test_file, source.label_key, num_classes
    )
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
    )


def _download_archive(url: str, root: Path, md5: str) -> None:
    """Download and extract ``url`` into ``root`` (torchvision checks the md5)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, download_root=str(root), md5=md5)


def _download_or_fail(name: str, source: _CifarSource, root: Path, download: bool) -> None:
    hint = (
        f"put the extracted {source.folder} folder under --data-dir, or use the embedded "
        "offline data set mnist5k, which needs no network"
    )
    if not download:
        raise UserError(f"{name} was not found at {root / source.folder}; {hint}.")
    check_output_folder(root, "--data-dir")  # the download is written there
    created = _first_missing(root)  # what a failure leaves behind is removed, down from here
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib's reads wait this long, not forever
    try:
        _download_archive(_CIFAR_URL + source.archive, root, source.md5)
    except Exception as exc:  # network, disk, md5 and archive errors all mean the same here
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise UserError(
            f"Could not download {name} to {root} ({type(exc).__name__}: {exc}); {hint}."
        ) from exc
    finally:
        socket.setdefaulttimeout(before)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            return missing
        missing = folder
    return missing


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, bytes and numpy arrays: a data file cannot run code.

    ``_codecs.encode`` is how Python 3 writes bytes at pickle protocol 2.
    """

    _NUMPY_CORE = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
    _ALLOWED = {"numpy.ndarray", "numpy.dtype", "_codecs.encode"} | {
        f"numpy.{core}.{name}" for name in _NUMPY_CORE for core in ("core", "_core")
    }

    def find_class(self, module: str, name: str) -> object:
        if f"{module}.{name}" not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _read_cifar_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle: uint8 ``[N, 3072]`` images (R, G, B planes) and int labels in
    ``[0, num_classes)``. Nothing is cast: float or wider pixels and labels out of range are
    refused, not silently wrapped or left to fail later inside the loss."""
    if not path.is_file():
        raise UserError(
            f"{path} is missing; download the data set again into --data-dir "
            "or use the offline data set mnist5k."
        )
    try:
        with path.open("rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise ValueError(f"expected a dict, found {type(batch).__name__}")
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        images = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key])
        if images.dtype != np.uint8:
            raise ValueError(f"pixels are {images.dtype}, not uint8")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels are {labels.dtype} of shape {labels.shape}, not 1-D integers")
        if labels.size == 0:  # a cut file: CIFAR's batches hold 10,000 images each
            raise ValueError("it holds no images")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"labels span {labels.min()}..{labels.max()}, outside 0..{num_classes - 1}"
            )
        if images.ndim != 2 or images.shape[1] != 3072 or len(images) != len(labels):
            raise ValueError(f"unexpected shapes {images.shape} and {labels.shape}")
    except (pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{path} is corrupt or unreadable ({exc}); delete its folder under --data-dir "
            "and download it again."
        ) from exc
    return images, labels.astype(np.int64)
