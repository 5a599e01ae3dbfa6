from __future__ import annotations

import pytest
import torch

from napari_hpa.core.architectures import adapt_first_conv, available_archs, build_model


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "mobilenet_v3_small"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_build_and_cam_is_exact_decomposition(arch: str, channels: int) -> None:
    net = build_model(arch, channels, 5).eval()
    x = torch.rand(2, channels, 64, 64)
    with torch.no_grad():
        logits = net(x)
        cam_logits, cam = net.forward_with_cam(x)
    assert logits.shape == (2, 5) and cam.shape[:2] == (2, 5)
    torch.testing.assert_close(logits, cam_logits, atol=1e-4, rtol=1e-4)


def test_unknown_arch_lists_known() -> None:
    with pytest.raises(ValueError, match="small_cnn"):
        build_model("vgg1000", 3, 2)
    assert "resnet18" in available_archs()


def test_adapt_first_conv_keeps_rgb_filters_and_sums_for_gray() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    four = adapt_first_conv(conv, 4)
    torch.testing.assert_close(four.weight[:, :3], conv.weight)
    torch.testing.assert_close(four.weight[:, 3:], conv.weight.mean(dim=1, keepdim=True))
    gray = adapt_first_conv(conv, 1)
    x = torch.rand(1, 1, 9, 9)
    torch.testing.assert_close(gray(x), conv(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


def test_reset_head() -> None:
    net = build_model("small_cnn", 4, 28, width=4, depth=2)
    net.reset_head(3)
    assert net(torch.rand(1, 4, 32, 32)).shape == (1, 3)
