from __future__ import annotations

import pytest
import torch

from napari_hpa.core.model.architectures import (
    POOLS,
    adapt_first_conv,
    available_archs,
    build_model,
)
from napari_hpa.core.model.checkpoint import load_model
from napari_hpa.core.model.registry import bundled_models_dir


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


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("stage1_stride", [1, 2])
def test_small_cnn_pools_keep_cam_exact(pool: str, stem_stride: int, stage1_stride: int) -> None:
    kw = {"pool": pool, "stem_stride": stem_stride, "stage1_stride": stage1_stride}
    net = build_model("small_cnn", 4, 5, width=4, **kw).eval()
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        logits = net(x)
        cam_logits, cam = net.forward_with_cam(x)
    torch.testing.assert_close(logits, cam_logits, atol=1e-4, rtol=1e-4)
    # total stride: 2 (pool) x 4 (stages 2, 3) x the two chosen strides
    assert cam.shape[-1] == 64 // (8 * stem_stride * stage1_stride)
    if pool != "avg":  # the class maps are pooled: the logit is at least the map's mean
        assert torch.all(logits >= cam.mean(dim=(2, 3)) - 1e-5)


def test_small_cnn_defaults_are_the_original_network() -> None:
    """Models saved before ``pool``/``stem_stride`` existed (arch_kwargs without them)
    rebuild the same network: same parameters, head on the mean feature."""
    old = build_model("small_cnn", 4, 3, width=4)
    new = build_model("small_cnn", 4, 3, width=4, pool="avg", stem_stride=1, stage1_stride=2)
    assert old.pool == "avg"
    assert [(n, p.shape) for n, p in old.state_dict().items()] == [
        (n, p.shape) for n, p in new.state_dict().items()
    ]
    new.load_state_dict(old.state_dict())
    old.eval(), new.eval()
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        expected = old.head(old.backbone(x).mean(dim=(2, 3)))
        torch.testing.assert_close(old(x), expected)
        torch.testing.assert_close(new(x), expected)
    with pytest.raises(ValueError, match="pool"):
        build_model("small_cnn", 4, 3, pool="median")
    with pytest.raises(ValueError, match="stem_stride"):
        build_model("small_cnn", 4, 3, stem_stride=3)
    with pytest.raises(ValueError, match="stage1_stride"):
        build_model("small_cnn", 4, 3, stage1_stride=4)


def test_bundled_small_cnn_fixture_loads_as_before() -> None:
    """The bundled synthetic fixture (arch_kwargs {"width": 8}) still loads as the
    average-pooled network and gives the head-on-mean-feature output."""
    folder = bundled_models_dir() / "hpa28-synthetic-tiny-v1"
    if not folder.exists():
        pytest.skip("bundled fixture not present")
    loaded = load_model(folder)
    assert loaded.spec.arch == "small_cnn" and "pool" not in loaded.spec.arch_kwargs
    net = loaded.net.eval()
    assert net.pool == "avg"
    x = torch.rand(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.head(net.backbone(x).mean(dim=(2, 3))))
