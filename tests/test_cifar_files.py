"""CIFAR files and downloads (``problems.adversarial.cifar``) beyond test_data.py: a ``~`` in
--data-dir, a --data-dir that is a file, any failure of the downloader, and batch files of the
wrong shape or kind. Nothing is fetched: the downloader is replaced."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fake_cifar import GOOD_PIXELS, make_cifar10

from bilevel.errors import UserError
from problems.adversarial import cifar, data


def test_a_data_dir_under_home_is_read_from_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_cifar10(tmp_path / "datasets")
    s = data.load_dataset("cifar10", data_dir="~/datasets", download=False, val_size=10)
    assert (len(s.train[1]), len(s.val[1]), len(s.test[1])) == (90, 10, 20)


def test_a_data_dir_that_is_a_file_is_refused_before_any_download(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cifar, "_download_archive", lambda *args: calls.append(args))
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("notes")
    with pytest.raises(UserError, match=r"--data-dir .* is a file, not a folder"):
        data.load_dataset("cifar10", data_dir=not_a_folder)
    assert calls == [] and not_a_folder.read_text() == "notes"


def test_a_download_that_fails_its_md5_check_is_a_user_error_and_leaves_nothing(
    tmp_path, monkeypatch
):
    """torchvision says a corrupt archive with a RuntimeError, not an OSError."""

    def corrupt(url, root, md5):
        root.mkdir(parents=True, exist_ok=True)
        (root / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(cifar, "_download_archive", corrupt)
    with pytest.raises(UserError, match=r"Could not download cifar10 .*RuntimeError") as err:
        data.load_dataset("cifar10", data_dir=tmp_path / "new")
    assert "mnist5k" in str(err.value) and not (tmp_path / "new").exists()


def test_a_missing_batch_file_is_said_to_be_missing_not_corrupt(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(UserError, match=r"data_batch_2 is missing") as err:
        data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=10)
    assert "mnist5k" in str(err.value) and "corrupt" not in str(err.value)


@pytest.mark.parametrize(
    "content, found",
    [
        ([GOOD_PIXELS, [0, 1, 2, 3]], "expected a dict, found list"),
        ({b"data": GOOD_PIXELS}, "'labels'"),  # a batch without its labels
        ({b"data": GOOD_PIXELS[:, :3000], b"labels": [0, 1, 2, 3]}, "unexpected shapes"),
        ({b"data": GOOD_PIXELS[None], b"labels": [0, 1, 2, 3]}, "unexpected shapes"),
        ({b"data": GOOD_PIXELS, b"labels": [0, 1, 2]}, "unexpected shapes (4, 3072) and (3,)"),
        # a cut download: CIFAR's batches hold 10,000 images; none gave a split of none
        ({b"data": GOOD_PIXELS[:0], b"labels": np.zeros(0, np.int64)}, "it holds no images"),
    ],
    ids=["a-list", "no-labels", "3000-values-an-image", "3-d-pixels", "fewer-labels", "empty"],
)
def test_a_batch_of_another_shape_or_kind_is_refused(tmp_path, content, found):
    """Each was a traceback later (a reshape, a dict lookup) or, for fewer labels than images,
    images paired with other images' labels."""
    folder = make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(content))
    with pytest.raises(UserError, match="test_batch is corrupt") as err:
        data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=10)
    assert found in str(err.value) and "\n" not in str(err.value)
