"""Classifiers: shapes, features/head split, normalisation inside the model, sizes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from problems.adversarial.models import MODEL_NAMES, Normalize, SmallCNN, build_model

torch.set_num_threads(1)

MNIST = dict(num_classes=10, in_channels=1, mean=(0.1307,), std=(0.3081,))
CIFAR = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
# (name, build kwargs, input shape, feature size); wrn-10-2 stands in for WRN-34-10's code path.
SMALL = [
    ("small-cnn", MNIST, (1, 28, 28), 128),
    ("trades-cnn", MNIST, (1, 28, 28), 200),
    ("preact-resnet18", dict(num_classes=100, in_channels=3, **CIFAR), (3, 32, 32), 512),
    ("wrn-10-2", dict(num_classes=10, in_channels=3, **CIFAR), (3, 32, 32), 128),
]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name, kwargs, shape, dim", SMALL)
def test_shapes_and_head_of_features_is_forward(name, kwargs, shape, dim) -> None:
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    x = torch.rand(2, *shape)
    x_before = x.clone()
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        via_head = model.head(features)
    assert logits.shape == (2, kwargs["num_classes"])
    assert features.shape == (2, dim)
    torch.testing.assert_close(via_head, logits)
    torch.testing.assert_close(x, x_before)  # the input is not modified in place


@pytest.mark.parametrize("name, kwargs, shape, dim", SMALL)
def test_normalisation_is_inside_the_model(name, kwargs, shape, dim) -> None:
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    channels = kwargs["in_channels"]
    core = build_model(
        name, kwargs["num_classes"], channels, (0.0,) * channels, (1.0,) * channels
    ).eval()
    state = model.state_dict()
    state.update({k: v for k, v in core.state_dict().items() if k.startswith("normalize.")})
    core.load_state_dict(state)

    mean = torch.tensor(kwargs["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(kwargs["std"]).view(1, -1, 1, 1)
    x = torch.rand(2, *shape)
    with torch.no_grad():  # features: the TRADES CNN's zero head makes every logit 0 at first
        expected = core.features((x - mean) / std)
        got = model.features(x)
        unnormalised = core.features(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, unnormalised, rtol=1e-4, atol=1e-5)


def test_normalize_saves_its_statistics() -> None:
    norm = Normalize((0.5, 0.25), (0.5, 2.0))
    assert set(norm.state_dict()) == {"mean", "std"}
    x = torch.ones(1, 2, 3, 3)
    torch.testing.assert_close(norm(x)[0, :, 0, 0], torch.tensor([1.0, 0.375]))
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def test_small_cnn_has_no_batch_norm() -> None:
    torch.manual_seed(0)
    model = build_model("small-cnn", **MNIST)
    assert isinstance(model, SmallCNN)
    assert not any(isinstance(m, BATCH_NORMS) for m in model.modules())
    # Behaviourally: in train mode a sample's output does not depend on the rest of the batch.
    model.train()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]))


def test_trades_cnn_starts_as_trades_does() -> None:
    """He-normal convolutions with zero biases and a zero head: weight std √(2 / fan_in), where
    PyTorch's default gives √(1 / (3 fan_in)), and the uniform prediction for every digit."""
    torch.manual_seed(0)
    model = build_model("trades-cnn", **MNIST)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert abs(conv.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.15
        assert not conv.bias.any()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert not model(x).any()
        assert model.features(x).std() > 0  # the body is not dead, only the head starts at 0


def test_small_cnn_is_small() -> None:
    assert n_params(SmallCNN()) < 500_000


def test_model_names_build_and_wrn_34_10_has_its_parameter_count() -> None:
    assert set(MODEL_NAMES) == {"small-cnn", "trades-cnn", "preact-resnet18", "wrn-34-10"}
    wrn = build_model("wrn-34-10", 10, 3, CIFAR["mean"], CIFAR["std"])  # no forward: too slow
    assert abs(n_params(wrn) - 46.16e6) < 0.05e6
    assert wrn.head.in_features == 640
    preact = build_model("preact-resnet18", 10, 3, CIFAR["mean"], CIFAR["std"])
    assert abs(n_params(preact) - 11.17e6) < 0.05e6


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        build_model("resnet50", 10, 3, CIFAR["mean"], CIFAR["std"])
    message = str(error.value)
    assert "resnet50" in message
    assert all(name in message for name in MODEL_NAMES)


@pytest.mark.parametrize("name", ["wrn-35-10", "wrn-34-0"])
def test_bad_wide_resnet_shape_is_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        build_model(name, 10, 3, CIFAR["mean"], CIFAR["std"])


def test_mean_std_must_match_the_input_channels() -> None:
    with pytest.raises(ValueError):
        build_model("small-cnn", 10, 1, CIFAR["mean"], CIFAR["std"])
