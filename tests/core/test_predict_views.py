"""Test-time views (model.json ``input.views``): the Predictor averages a tile's flips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_spec

from napari_hpa.core.image.io import ImageData
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import InputSpec, load_model, read_spec, save_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.views import view_count, with_views


def _model(root: Path, views: str, seed: int = 0) -> Path:
    spec = tiny_spec(size=32)
    spec.input.views = views
    torch.manual_seed(seed)
    net = build_model(
        spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
    )
    return save_model(net, spec, root)


def _image(data: np.ndarray, name: str = "img") -> ImageData:
    return ImageData(
        data=np.ascontiguousarray(data, np.float32),
        channel_names=("microtubules", "protein", "nucleus", "er"),
        paths=(),
        image_id=name,
        source=name,
        metadata={},
    )


def _field(seed: int = 0, size: int = 32) -> np.ndarray:
    noise = np.random.default_rng(seed).random((4, size, size))
    ramp = np.linspace(0, 3, size)[None, None, :] * np.linspace(0, 1, size)[None, :, None]
    return (noise + ramp).astype(np.float32)  # bright in one corner: its views differ


@pytest.mark.parametrize("mode", ["none", "flip4", "d4"])
def test_views_are_distinct_symmetries_of_the_tile(mode: str) -> None:
    tiles = np.random.default_rng(1).random((3, 2, 8, 8)).astype(np.float32)
    out = with_views(tiles, mode)
    n = view_count(mode)
    assert out.shape == (3 * n, 2, 8, 8)
    assert np.array_equal(out[:3], tiles)  # the tiles themselves come first
    for i in range(3):
        views = out[i::3]
        # each view holds the same pixels, and no two views are the same picture
        for v in views:
            assert np.array_equal(np.sort(v, axis=None), np.sort(tiles[i], axis=None))
        assert len({v.tobytes() for v in views}) == n


def test_d4_refuses_non_square_tiles() -> None:
    with pytest.raises(ValueError, match="square"):
        with_views(np.zeros((1, 1, 4, 6), np.float32), "d4")


def test_unknown_views_in_model_json_is_refused(tmp_path: Path) -> None:
    folder = _model(tmp_path, "d4")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["input"]["views"] == "d4"
    assert read_spec(folder).input.views == "d4"
    with pytest.raises(ValueError, match="input.views"):
        InputSpec(channels=["protein"], views="d8")
    del meta["input"]["views"]  # an older model's model.json: no views
    (folder / "model.json").write_text(json.dumps(meta))
    assert read_spec(folder).input.views == "none"


def test_d4_probabilities_are_the_mean_over_the_eight_views(tmp_path: Path) -> None:
    folder = _model(tmp_path, "d4")
    predictor = Predictor(folder, device="cpu")
    image = _image(_field())
    tiles, _ = predictor.prepare(image)
    assert len(tiles) == 1
    net = load_model(folder).net.eval()
    t = torch.from_numpy(tiles)
    by_hand = []
    with torch.inference_mode():
        for k in range(4):
            for flip in (False, True):
                v = torch.rot90(t, k, dims=(-2, -1))
                by_hand.append(torch.sigmoid(net(v.flip(-1) if flip else v)))
    expected = torch.cat(by_hand).mean(0).numpy()
    got = predictor.predict_one(image).probabilities
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with torch.inference_mode():
        alone = torch.sigmoid(net(t))[0].numpy()
    assert np.abs(got - alone).max() > 1e-4  # the views change the answer


def test_a_rotated_or_mirrored_cell_gets_the_same_answer(tmp_path: Path) -> None:
    field = _field(2)
    views_on = Predictor(_model(tmp_path / "a", "d4"), device="cpu")
    views_off = Predictor(_model(tmp_path / "b", "none"), device="cpu")
    for p, should_match in ((views_on, True), (views_off, False)):
        base = p.predict_one(_image(field)).probabilities
        for turned in (np.rot90(field, 1, axes=(1, 2)), field[:, :, ::-1]):
            other = p.predict_one(_image(turned)).probabilities
            assert np.allclose(base, other, atol=1e-5) == should_match


def test_batch_path_gui_path_and_cells_agree_with_views(tmp_path: Path) -> None:
    predictor = Predictor(_model(tmp_path, "d4"), device="cpu", batch_size=5)
    images = [_image(_field(s, 64), f"i{s}") for s in range(3)]
    one = np.stack([predictor.predict_one(im).probabilities for im in images])
    prepared = predictor.predict_prepared([predictor.prepare(im)[0] for im in images])
    np.testing.assert_allclose(prepared, one, atol=1e-5)
    labels = np.zeros((64, 64), np.int32)
    labels[4:30, 6:28] = 1
    labels[34:60, 30:62] = 2
    cells = predictor.predict_cells(images[0], labels, use_context=False)
    assert sorted(cells) == [1, 2]
    assert all(np.isfinite(c.probabilities).all() for c in cells.values())


def test_activation_maps_come_from_the_tiles_not_their_views(tmp_path: Path) -> None:
    image = _image(_field(3, 64))
    with_d4 = Predictor(_model(tmp_path / "a", "d4", seed=4), device="cpu")
    without = Predictor(_model(tmp_path / "b", "none", seed=4), device="cpu")
    a = with_d4.predict_one(image, cam_classes=[0, 5])
    b = without.predict_one(image, cam_classes=[0, 5])
    assert a.cams[0].shape == (64, 64)
    for c in (0, 5):
        np.testing.assert_allclose(a.cams[c], b.cams[c], atol=1e-5)
