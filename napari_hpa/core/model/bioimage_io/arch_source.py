"""Self-contained torch source of napari-hpa's exportable networks, shipped in bioimage.io packages.

bioimage.io runs a ``pytorch_state_dict`` model from its architecture's source file in an
environment that has torch and nothing of napari-hpa, so this module imports torch and the
standard library only (a test checks it). It rebuilds ``efficientnet_lite0`` and
``small_cnn`` with the same parameter names as :mod:`napari_hpa.core.model.architectures`,
so a napari-hpa state dict loads into it strictly, and its outputs are the same: the logits
(N, K) and the class-activation maps (N, K, h, w) of one forward pass.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: The architectures this file can build (napari-hpa's names).
ARCHITECTURES = ("efficientnet_lite0", "small_cnn")

# EfficientNet-Lite0 stages: repeats, kernel, stride, expansion, in, out.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LITE0_FEATURES = 1280
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding (strided ones pad bottom/right more)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            cin, cout, kernel, stride, kernel // 2 if stride == 1 else 0, groups=groups, bias=False
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


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SameConv2d(cin, mid, 1)
            self.bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.project_conv = SameConv2d(mid, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.act = nn.ReLU6()
        self.use_skip = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the block (inference: no stochastic depth)."""
        x = inputs
        if self.has_expand:
            x = self.act(self.bn0(self.expand_conv(x)))
        x = self.act(self.bn1(self.depthwise_conv(x)))
        x = self.bn2(self.project_conv(x))
        return x + inputs if self.use_skip else x


class EfficientNetLiteBackbone(nn.Module):
    """Stem, 16 MBConv blocks and the 1x1 head conv: (N, C, H, W) -> (N, 1280, H/32, W/32)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(in_channels, 32, 3, 2)
        self.bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = SameConv2d(320, _LITE0_FEATURES, 1)
        self.bn1 = nn.BatchNorm2d(_LITE0_FEATURES, eps=_BN_EPS)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map."""
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn1(self.conv_head(x)))


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def _small_cnn(
    in_channels: int,
    width: int = 16,
    depth: int = 4,
    stem_stride: int = 1,
    stage1_stride: int = 2,
) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    cin = in_channels
    for i in range(depth):
        cout = width * 2 ** min(i, 3)
        stride = (stem_stride, stage1_stride)[i] if i < 2 else 2
        layers += [_conv_bn_relu(cin, cout, stride=stride), _conv_bn_relu(cout, cout)]
        if i == 0:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers), cin


class NapariHpaClassifier(nn.Module):
    """A napari-hpa classifier: backbone -> class maps -> pooled logits.

    Parameters
    ----------
    arch
        ``efficientnet_lite0`` or ``small_cnn``.
    in_channels
        Input channels.
    num_classes
        Classes (outputs of the linear head).
    arch_kwargs
        The architecture's keywords from the model's ``model.json`` (training-only
        ones such as ``dropout`` are accepted and ignored).
    """

    def __init__(
        self,
        arch: str,
        in_channels: int,
        num_classes: int,
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(arch_kwargs or {})
        self.pool = str(kwargs.get("pool", "avg"))
        if arch == "efficientnet_lite0":
            self.backbone: nn.Module = EfficientNetLiteBackbone(in_channels)
            features = _LITE0_FEATURES
        elif arch == "small_cnn":
            keys = ("width", "depth", "stem_stride", "stage1_stride")
            self.backbone, features = _small_cnn(
                in_channels, **{k: int(kwargs[k]) for k in keys if k in kwargs}
            )
        else:
            raise ValueError(f"unknown architecture {arch!r}; this file builds {ARCHITECTURES}")
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the logits (N, K) and the class-activation maps (N, K, h, w)."""
        fmap = self.backbone(x)
        cam = torch.einsum("bfhw,kf->bkhw", fmap, self.head.weight)
        cam = cam + self.head.bias[None, :, None, None]
        mean = cam.mean(dim=(2, 3))
        if self.pool == "avg":
            return mean, cam
        peak = cam.amax(dim=(2, 3))
        return (peak if self.pool == "max" else 0.5 * (peak + mean)), cam
