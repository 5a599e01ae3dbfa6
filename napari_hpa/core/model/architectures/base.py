"""Network architectures, by name, so that ``model.json`` can rebuild them.

Every architecture is a :class:`ClassifierNet`: a backbone that returns a
feature map and one linear head on its global average (or, for ``pool``
"max"/"avgmax", the head at every location, then pooled). That shape is what
makes class-activation maps exact (the head's weights applied to the feature
map) and what lets fine-tuning swap the head for a new task.

Builders never download weights; pretrained weights come from a checkpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ArchBuilder = Callable[..., "ClassifierNet"]
_ARCHITECTURES: dict[str, ArchBuilder] = {}

#: Bounds on what a ``model.json`` (a file from anywhere) may ask a builder for, checked
#: before any weight is allocated: a network that size would not fit in memory anyway.
MAX_IN_CHANNELS = 64
MAX_CLASSES = 10_000
#: 100 M parameters are 400 MB of float32 weights; the bundled models have 3-4 M.
MAX_PARAMETERS = 100_000_000


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Make a builder ``f(in_channels, num_classes, **kwargs)`` known by name (a decorator)."""

    def wrap(fn: ArchBuilder) -> ArchBuilder:
        _ARCHITECTURES[name] = fn
        return fn

    return wrap


def available_archs() -> list[str]:
    """Return the names of the registered architectures, sorted."""
    return sorted(_ARCHITECTURES)


def arch_parameters(arch: str) -> set[str]:
    """Return the keyword arguments that ``arch``'s builder takes (empty if unknown)."""
    builder = _ARCHITECTURES.get(arch)
    return set(inspect.signature(builder).parameters) if builder is not None else set()


def bounded_int(name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` as an int in ``[low, high]``, else raise ValueError naming ``name``.

    For numbers read from a file: a bool, a fraction or a string is refused, not
    converted, and so is anything out of range (before it can size an allocation).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {number}")
    return number


def bounded_float(name: str, value: object, low: float, high: float) -> float:
    """Return ``value`` as a finite float in ``[low, high]``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    number = float(value)
    if not low <= number <= high:  # also refuses NaN
        raise ValueError(f"{name} must be between {low} and {high}, not {number}")
    return number


def check_arch(arch: str, in_channels: int, num_classes: int, **kwargs: Any) -> int:
    """Check that ``arch`` can be built with these sizes; return its parameter count.

    The sizes come from ``model.json`` or the command line, i.e. from anywhere, so
    they are bounded before anything is allocated: the channels and classes here,
    each builder's own keywords in the builder, and the parameter count of the
    whole network by building it on torch's ``meta`` device (shapes only, no
    memory), since keywords each in bounds may still multiply into a giant.

    Raises
    ------
    ValueError
        For an unknown architecture or a size out of bounds.
    TypeError
        For a keyword the builder does not take.
    """
    builder = _builder(arch)
    in_channels = bounded_int("the number of input channels", in_channels, 1, MAX_IN_CHANNELS)
    num_classes = bounded_int("the number of classes", num_classes, 1, MAX_CLASSES)
    with torch.device("meta"):
        shape_only = builder(in_channels=in_channels, num_classes=num_classes, **kwargs)
    n_params = sum(p.numel() for p in shape_only.parameters())
    n_params += sum(b.numel() for b in shape_only.buffers())
    if n_params > MAX_PARAMETERS:
        raise ValueError(
            f"{arch} with {kwargs or 'its defaults'} would have {n_params:,} parameters "
            f"(at most {MAX_PARAMETERS:,})"
        )
    return n_params


def _builder(arch: str) -> ArchBuilder:
    try:
        return _ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; known: {', '.join(available_archs())}"
        ) from None


def build_model(arch: str, in_channels: int, num_classes: int, **kwargs: Any) -> ClassifierNet:
    """Build an untrained model of a registered architecture, its sizes bounded first.

    The channels and classes are bounded here and each builder bounds its own
    keywords; when keywords are given, :func:`check_arch` also bounds the
    parameter count before any weight is allocated (every builder's defaults
    are small).

    Raises
    ------
    ValueError
        For an unknown architecture or a size out of bounds.
    TypeError
        For a keyword the builder does not take.
    """
    builder = _builder(arch)
    if kwargs:
        check_arch(arch, in_channels, num_classes, **kwargs)
    in_channels = bounded_int("the number of input channels", in_channels, 1, MAX_IN_CHANNELS)
    num_classes = bounded_int("the number of classes", num_classes, 1, MAX_CLASSES)
    return builder(in_channels=in_channels, num_classes=num_classes, **kwargs)


#: Ways to pool a feature map into one logit per class (``ClassifierNet(pool=...)``).
POOLS: tuple[str, ...] = ("avg", "max", "avgmax")


class ClassifierNet(nn.Module):
    """Backbone -> global pool -> dropout -> linear head.

    ``pool="avg"`` (the default, and what every saved model before ``pool``
    existed used) averages the feature map, then applies the head. ``"max"``
    and ``"avgmax"`` (the mean of average and max) pool the class maps
    instead, i.e. the head is applied at every location first: a structure
    that occupies a few pixels (one centrosome dot per cell) then drives its
    logit instead of being diluted by the whole field, and the class maps stay
    an exact decomposition of the logits.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        dropout: float = 0.2,
        pool: str = "avg",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
        self.backbone = backbone
        self.num_features = num_features
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, F, h, w)."""
        return self.backbone(x)

    def _class_maps(self, fmap: torch.Tensor) -> torch.Tensor:
        """Apply the head at every location: (B, F, h, w) -> (B, K, h, w)."""
        return (
            torch.einsum("bfhw,kf->bkhw", fmap, self.head.weight)
            + self.head.bias[None, :, None, None]
        )

    def _pool_maps(self, cam: torch.Tensor) -> torch.Tensor:
        """Class maps (B, K, h, w) -> logits (B, K) by this net's pooling."""
        if self.pool == "avg":
            return cam.mean(dim=(2, 3))
        peak = cam.amax(dim=(2, 3))
        return peak if self.pool == "max" else 0.5 * (peak + cam.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (B, K); ``avg`` pooling skips the class maps (same logits)."""
        if self.pool == "avg":
            pooled = self.features(x).mean(dim=(2, 3))
            return self.head(self.dropout(pooled))
        return self._pool_maps(self._class_maps(self.dropout(self.features(x))))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K) and class-activation maps (B, K, h, w) in one pass.

        The head is linear, and the logits are the pooled class maps (for
        ``avg``: the mean of each CAM equals the head on the mean feature), so
        the maps are an exact decomposition of the logits.
        """
        cam = self._class_maps(self.features(x))
        return self._pool_maps(cam), cam

    def reset_head(self, num_classes: int) -> None:
        """Replace the head, e.g. when fine-tuning onto another task."""
        self.head = nn.Linear(self.num_features, num_classes)

    def head_parameters(self) -> list[nn.Parameter]:
        """Return the head's parameters: the only ones trained in the first (frozen) epochs."""
        return list(self.head.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Return the feature extractor's parameters, frozen while only the head trains."""
        return list(self.backbone.parameters())


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


#: small_cnn's widest first stage (the last stages are 8 times wider) and most stages:
#: each stage halves the resolution, so 8 already need tiles of 256 px or more.
SMALL_CNN_MAX_WIDTH = 256
SMALL_CNN_MAX_DEPTH = 8


@register_arch("small_cnn")
def small_cnn(
    in_channels: int,
    num_classes: int,
    width: int = 16,
    depth: int = 4,
    dropout: float = 0.1,
    pool: str = "avg",
    stem_stride: int = 1,
    stage1_stride: int = 2,
) -> ClassifierNet:
    """Build a small VGG-like CNN that trains in minutes on two CPU cores.

    Each stage doubles the width and halves the resolution; ``depth`` stages.
    ``stem_stride=2`` makes the first convolution strided: a quarter of the
    cost at full resolution, where most of the time goes, while its 3x3
    window still sees every input pixel (a 2-px dot is not lost).
    ``stage1_stride=1`` keeps the second stage at the resolution of the max
    pool before it; with 2 (the original) the pool and a strided convolution
    follow each other and that resolution has no convolution of its own.
    ``pool``: see :class:`ClassifierNet`. The defaults (``avg``, 1, 2) are the
    original network, which models saved without these keys rebuild.
    """
    for name, value in (("stem_stride", stem_stride), ("stage1_stride", stage1_stride)):
        if value not in (1, 2) or isinstance(value, bool):
            raise ValueError(f"{name} must be 1 or 2, not {value!r}")
    width = bounded_int("small_cnn width", width, 1, SMALL_CNN_MAX_WIDTH)
    depth = bounded_int("small_cnn depth", depth, 1, SMALL_CNN_MAX_DEPTH)
    dropout = bounded_float("small_cnn dropout", dropout, 0.0, 1.0)
    layers: list[nn.Module] = []
    cin = in_channels
    for i in range(depth):
        cout = width * 2 ** min(i, 3)
        stride = (stem_stride, stage1_stride)[i] if i < 2 else 2
        layers += [_conv_bn_relu(cin, cout, stride=stride), _conv_bn_relu(cout, cout)]
        if i == 0:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    return ClassifierNet(nn.Sequential(*layers), cin, num_classes, dropout, pool)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """Return a copy of ``conv`` that reads ``in_channels`` channels.

    Pretrained RGB filters are kept for the first three channels; extra
    channels get the mean of the RGB filters, and a single channel gets their
    sum, so that a gray image gives the same response as the same gray RGB one.
    """
    if conv.in_channels == in_channels:
        return conv
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        _pair(conv.kernel_size),
        _pair(conv.stride),
        padding,
        _pair(conv.dilation),
        conv.groups,
        conv.bias is not None,
    )
    with torch.no_grad():
        w = conv.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:
            mean = w.mean(dim=1, keepdim=True)
            for c in range(in_channels):
                new.weight[:, c : c + 1] = w[:, c : c + 1] if c < w.shape[1] else mean
        if conv.bias is not None and new.bias is not None:  # both or neither
            new.bias.copy_(conv.bias)
    return new


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """Return a Conv2d's (height, width) setting as the 2-tuple its constructor takes."""
    return (value[0], value[1])


@register_arch("resnet18")
def resnet18(in_channels: int, num_classes: int, dropout: float = 0.2) -> ClassifierNet:
    """Build torchvision's ResNet-18 (random init; pretrained weights come from a checkpoint)."""
    from torchvision.models import resnet18 as tv_resnet18

    dropout = bounded_float("resnet18 dropout", dropout, 0.0, 1.0)

    net = tv_resnet18(weights=None)
    net.conv1 = adapt_first_conv(net.conv1, in_channels)
    backbone = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return ClassifierNet(backbone, 512, num_classes, dropout)


@register_arch("mobilenet_v3_small")
def mobilenet_v3_small(in_channels: int, num_classes: int, dropout: float = 0.2) -> ClassifierNet:
    """Build torchvision's MobileNetV3-Small feature extractor (random init)."""
    from torchvision.models import mobilenet_v3_small as tv_mnv3

    dropout = bounded_float("mobilenet_v3_small dropout", dropout, 0.0, 1.0)

    net = tv_mnv3(weights=None)
    first = net.features[0][0]
    net.features[0][0] = adapt_first_conv(first, in_channels)
    return ClassifierNet(net.features, 576, num_classes, dropout)
