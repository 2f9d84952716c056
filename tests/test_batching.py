"""Minibatches of ``problems.adversarial.data``: refusals test_data.py leaves open, and the
crop-flip augmentation's distribution (every offset of the 4-pixel padding, flips half the time)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bilevel.errors import UserError
from problems.adversarial import data

torch.set_num_threads(1)


@pytest.mark.parametrize("n", [0, -3])
def test_a_subset_of_no_examples_is_refused(n):
    """--train-size 0 would train on nothing and --eval-size 0 select on nothing."""
    pair = (torch.rand(4, 1, 2, 2), torch.arange(4))
    with pytest.raises(UserError, match=f"at least 1; got {n}"):
        data.subset(pair, n)


def test_images_and_labels_of_other_lengths_are_refused():
    """Else the batches would pair images with other images' labels, and drop the surplus."""
    x, y = torch.rand(5, 1, 2, 2), torch.arange(4)
    with pytest.raises(ValueError, match="x has 5 examples but y has 4"):
        list(data.iterate_batches(x, y, 2, shuffle=False))


def test_crop_flip_uses_every_offset_of_the_padding_and_flips_half_the_images():
    """Each offset 0..8 (the crop may start anywhere in the 4 zero pixels on each side) on both
    axes, about uniformly, and a horizontal flip with probability 1/2."""
    size, n, p = 8, 1800, 4
    image = torch.arange(1.0, size * size + 1).reshape(1, size, size) / (size * size)
    padded = F.pad(image, (p, p, p, p))
    windows = [  # (dy, dx, flipped) -> the crop; distinct pixels tell every window apart
        ((dy, dx, flip), padded[:, dy : dy + size, dx : dx + size].flip(-1) if flip else
         padded[:, dy : dy + size, dx : dx + size])
        for dy in range(2 * p + 1) for dx in range(2 * p + 1) for flip in (False, True)
    ]  # fmt: skip
    stack = torch.stack([w for _, w in windows])  # [162, 1, H, W]
    x, y = image.expand(n, 1, size, size).contiguous(), torch.arange(n)
    gen = torch.Generator().manual_seed(0)
    ((xb, _),) = data.iterate_batches(x, y, n, shuffle=False, generator=gen, augment="crop-flip")
    match = (xb[:, None] == stack[None]).flatten(2).all(2)  # [n, 162]
    assert match.sum(1).tolist() == [1] * n  # every output is exactly one window
    drawn = [windows[k][0] for k in match.float().argmax(1).tolist()]
    for axis in (0, 1):
        counts = torch.bincount(torch.tensor([d[axis] for d in drawn]), minlength=2 * p + 1)
        assert len(counts) == 2 * p + 1 and counts.min() > n / 9 * 0.7, counts
        assert counts.max() < n / 9 * 1.3, counts
    flipped = sum(d[2] for d in drawn) / n
    assert 0.45 < flipped < 0.55
