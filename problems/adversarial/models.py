"""Classifiers for adversarial training; inputs in [0, 1], normalisation is the first layer.

Keeping ``Normalize`` inside the model means every ε is in pixel units and an attack from another
library sees the same function as ours. Every model exposes ``features(x) -> [B, D]`` (the
penultimate, pooled features, used by AIT's cosine objective) and ``head``, with
``forward(x) == head(features(x))``.

- ``SmallCNN``: a modest two-conv network for 28x28 digits, cheap enough for two CPU cores.
  No batch norm, so its output for one sample never depends on the rest of the batch.
- ``PreActResNet18``: He et al. (2016), "Identity Mappings in Deep Residual Networks", at the
  depth and widths Wong et al. (2020) train; a projection shortcut takes the block's pre-activated
  input, as in He et al.'s form and kuangliu's pytorch-cifar (fast_adversarial's own file feeds
  it the raw input instead: the same parameters, another function).
- ``WideResNet``: Zagoruyko & Komodakis (2016), "Wide Residual Networks", in the form used by
  TRADES (Zhang et al., 2019) and by Jiang et al. (2021), Section 5 (WRN-34-10).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bilevel.errors import UserError

MODEL_NAMES: tuple[str, ...] = ("small-cnn", "trades-cnn", "preact-resnet18", "wrn-34-10")
DIGIT_MODELS = ("small-cnn", "trades-cnn")  # fully connected heads sized for 28x28 inputs


def check_input_size(name: str, size: int, dataset: str) -> None:
    """One sentence where the model ``name`` cannot take the data set's ``size``×``size`` images
    (the ResNets pool globally and take any size)."""
    if name in DIGIT_MODELS and size != 28:
        raise UserError(
            f"--model {name} takes 28x28 digits and {dataset}'s images are {size}x{size}; "
            "choose preact-resnet18 or wrn-34-10."
        )


_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")


class Normalize(nn.Module):
    """(x − mean) / std per channel; ``mean`` and ``std`` are buffers (saved with the model)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}.")
        if any(s <= 0 for s in std):
            raise ValueError(f"Every std must be > 0, got {tuple(std)}.")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """What every model here shares: ``normalize`` first (zero mean and unit std until
    ``build_model`` sets the data set's), ``features`` (by default ``body`` after ``normalize``)
    and ``head``, with ``forward(x) == head(features(x))``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.normalize = Normalize((0.0,) * in_channels, (1.0,) * in_channels)

    def features(self, x: Tensor) -> Tensor:
        """``x``: [B, C, H, W] in [0, 1] → [B, D]."""
        return self.body(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, C, H, W] in [0, 1] → logits [B, num_classes]."""
        return self.head(self.features(x))


class SmallCNN(Classifier):
    """conv5x5(16) → ReLU → pool → conv5x5(32) → ReLU → pool → fc(128) → ReLU → fc(classes).

    For 28x28 inputs (MNIST-like digits). No batch norm. ``features`` is the 128-d hidden layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__(in_channels)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)


class TradesCNN(Classifier):
    """The MNIST classifier of TRADES (Zhang et al., ICML 2019), used by much of the MNIST
    robustness literature: conv3x3(32) → conv3x3(32) → pool → conv3x3(64) → conv3x3(64) → pool →
    fc(200) → fc(200) → fc(classes), ReLU after every hidden layer, no batch norm.

    About 4x the compute of ``SmallCNN`` per example (valid convolutions, 28 → 4x4x64). For
    28x28 inputs. ``features`` is the second 200-d hidden layer.

    Initialised as TRADES's code does: He-normal convolutions (He et al., 2015) with zero biases,
    and a zero head, so every digit starts at the uniform prediction. With PyTorch's default
    initialisation instead, SGD at lr 0.05 left this net at chance for whole epochs on some seeds
    (the runs that did train were more robust after 10 epochs: docs/results.md, study step 18).
    TRADES's dropout (0.5, after the first fully connected layer) is left out, as in ``SmallCNN``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__(in_channels)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 200),
            nn.ReLU(),
            nn.Linear(200, 200),
            nn.ReLU(),
        )
        self.head = nn.Linear(200, num_classes)
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)


class PreActBlock(nn.Module):
    """BN → ReLU → conv3x3 → BN → ReLU → (dropout) → conv3x3, plus a shortcut: the pre-activation
    block of PreAct ResNet (He et al., 2016) and of wide ResNets (Zagoruyko & Komodakis, 2016)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        # When the shape changes, the shortcut sees the pre-activated input (identity mappings).
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class PreActResNet18(Classifier):
    """Pre-activation ResNet-18 (He et al., 2016); see the module docstring for its shortcut.

    Stages of two blocks with 64/128/256/512 channels; ``features`` is the 512-d global average of
    the final BN-ReLU activations (any input size of at least 8x8 works).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.head = nn.Linear(512, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``x``: [B, C, H, W] in [0, 1] → [B, 512]."""
        out = self.layers(self.conv1(self.normalize(x)))
        return F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)


class WideResNet(Classifier):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016) as in TRADES (Zhang et al., 2019).

    Three stages of ``(depth − 4) / 6`` blocks with 16k/32k/64k channels (strides 1, 2, 2) after a
    16-channel stem; ``features`` is the 64k-d global average of the final BN-ReLU activations.
    WRN-34-10 with 10 classes has about 46.2M parameters.
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_channels)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"A wide ResNet's depth must be 6n + 4 with n >= 1, got {depth}.")
        if widen_factor < 1:
            raise UserError(f"A wide ResNet's widen factor must be >= 1, got {widen_factor}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for stage, stride in enumerate((1, 2, 2)):
            for i in range(n):
                in_planes = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(
                    PreActBlock(in_planes, widths[stage + 1], stride if i == 0 else 1, drop_rate)
                )
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.head = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        """``x``: [B, C, H, W] in [0, 1] → [B, 64 · widen_factor]."""
        out = self.blocks(self.conv1(self.normalize(x)))
        return F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)


_FIXED_MODELS = {"small-cnn": SmallCNN, "trades-cnn": TradesCNN, "preact-resnet18": PreActResNet18}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> nn.Module:
    """A classifier by name, with ``Normalize(mean, std)`` as its first layer.

    Names: ``MODEL_NAMES``, and any ``"wrn-D-W"`` (depth D = 6n + 4, widen factor W).

    Raises:
        UserError: unknown name (a ``ValueError``, as is ``mean``/``std`` not one value per
            input channel).
    """
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(
            f"mean and std need one value per input channel ({in_channels}), "
            f"got {len(mean)} and {len(std)}."
        )
    model: Classifier
    wrn = _WRN_NAME.fullmatch(name)
    if name in _FIXED_MODELS:
        model = _FIXED_MODELS[name](in_channels=in_channels, num_classes=num_classes)
    elif wrn is not None:
        depth, widen = int(wrn.group(1)), int(wrn.group(2))
        model = WideResNet(depth, widen, num_classes=num_classes, in_channels=in_channels)
    else:
        raise UserError(
            f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)} "
            "(or wrn-D-W for another wide ResNet)."
        )
    model.normalize = Normalize(mean, std)
    return model
