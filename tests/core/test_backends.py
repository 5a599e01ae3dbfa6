"""The CPU runtimes behind the one Predictor: exact, cached by weights, and never fatal.

Everything here runs the real runtimes (ONNX Runtime, OpenVINO) on the real bundled
models; a test of a runtime that is not installed skips, naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from napari_hpa.core.image.io import read_image
from napari_hpa.core.model.backends import (
    TOLERANCE,
    auto_cpu_backend,
    is_installed,
    open_runtime,
    resolve_backend,
)
from napari_hpa.core.model.backends.choice import cpu_is_intel
from napari_hpa.core.model.backends.export import cache_dir, onnx_path, weights_key
from napari_hpa.core.model.backends.fastest import (
    RECORD,
    recorded_fastest,
    remember_fastest,
    time_runtimes,
)
from napari_hpa.core.model.checkpoint import LoadedModel, load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import (
    bundled_models_dir,
    list_models,
    resolve_model,
    sample_data_dir,
)

RUNTIMES = ["onnxruntime", "openvino"]
BUNDLED = sorted(e.name for e in list_models() if e.source == "bundled")


def _needs(backend: str) -> None:
    if not is_installed(backend):
        pytest.skip(f"{backend} is not installed (pip install {backend} onnx)")


def _real_image(model_name: str):
    """A real image for the model: the bundled HPA field, or a plankton JPEG."""
    if model_name.startswith("plankton"):
        found = sorted((SHARED_DATA / "plankton_ndsb2015").rglob("*.jpg"))[:1]
        if found:
            return read_image(found[0])
        # without the shared data: a real grayscale micrograph all the same
        return read_image(sample_data_dir() / "hpa_57_F11_1_green.png")
    return read_image(sample_data_dir() / "hpa_57_F11_1_green.png")


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("model_name", BUNDLED)
def test_every_bundled_model_gives_torchs_answers(model_name: str, backend: str) -> None:
    _needs(backend)
    torch_pred = Predictor(model_name, device="cpu")
    runtime_pred = Predictor(model_name, device="cpu", backend=backend)
    assert runtime_pred.ensure_backend() == backend
    image = _real_image(model_name)

    expected = torch_pred.predict_one(image, cam_classes="predicted")
    got = runtime_pred.predict_one(image, cam_classes="predicted")
    assert np.abs(got.probabilities - expected.probabilities).max() < 1e-3
    assert got.predicted == expected.predicted
    for k, heat in expected.cams.items():
        assert np.nanmax(np.abs(got.cams[k] - heat)) < 1e-3

    # the graph's second output, the class-activation maps of each tile, is torch's too
    tiles, _ = torch_pred.prepare(image)
    logits_t, cams_t = torch_pred.run_tiles(tiles, with_cam=True)
    logits_r, cams_r = runtime_pred.run_tiles(tiles, with_cam=True)
    assert cams_t is not None and cams_r is not None and cams_r.shape == cams_t.shape
    assert np.abs(logits_r - logits_t).max() < 1e-3
    assert np.abs(cams_r - cams_t).max() < 1e-3
    assert runtime_pred.backend == backend  # it answered; it did not fall back


def test_export_is_cached_by_weights_and_never_written_to_the_bundled_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs("onnxruntime")
    monkeypatch.setenv("NAPARI_HPA_CACHE", str(tmp_path / "onnx"))
    bundled_before = _tree(bundled_models_dir())
    model = Predictor("hpa28-synthetic-tiny", device="cpu").model

    first = onnx_path(model)
    assert first.parent == cache_dir() == tmp_path / "onnx"
    assert weights_key(model) in first.name
    stamp = first.stat().st_mtime_ns
    assert onnx_path(model) == first and first.stat().st_mtime_ns == stamp  # not re-exported
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no temporary left

    with torch.no_grad():  # other weights (a retrained model): another file
        next(model.net.parameters()).add_(0.01)
    second = onnx_path(model)
    assert second != first and second.is_file() and first.is_file()
    assert _tree(bundled_models_dir()) == bundled_before


@pytest.fixture
def tiny_in_own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedModel:
    """The tiny bundled model, exporting into a cache of this test's own."""
    _needs("onnxruntime")
    monkeypatch.setenv("NAPARI_HPA_CACHE", str(tmp_path))
    return Predictor("hpa28-synthetic-tiny", device="cpu").model


def test_a_damaged_cached_graph_is_exported_again(tiny_in_own_cache: LoadedModel) -> None:
    model = tiny_in_own_cache
    path = onnx_path(model)
    path.write_bytes(b"not a graph")  # a disk error, a half-copied cache

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it recovers
        predictor = Predictor(model, device="cpu", backend="onnxruntime")
        assert predictor.ensure_backend() == "onnxruntime"
    assert path.stat().st_size > 1000


def test_a_cached_graph_of_other_weights_is_caught_by_the_probe(
    tiny_in_own_cache: LoadedModel,
) -> None:
    model = tiny_in_own_cache
    other = Predictor("hpa28-synthetic-tiny", device="cpu").model
    with torch.no_grad():
        for p in other.net.parameters():
            p.mul_(1.5)
    wrong = onnx_path(other).read_bytes()
    onnx_path(model).write_bytes(wrong)  # the right name, another model's graph

    image = _real_image("hpa28-synthetic-tiny")
    expected = Predictor(model, device="cpu").predict_one(image)
    predictor = Predictor(model, device="cpu", backend="onnxruntime")
    got = predictor.predict_one(image)
    assert predictor.backend == "onnxruntime"  # exported anew, and checked
    assert onnx_path(model).read_bytes() != wrong
    assert np.abs(got.probabilities - expected.probabilities).max() <= TOLERANCE


def test_a_runtime_that_fails_falls_back_to_torch_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs("onnxruntime")
    blocker = tmp_path / "a file"
    blocker.write_text("the cache cannot be made under a file")
    monkeypatch.setenv("NAPARI_HPA_CACHE", str(blocker / "onnx"))
    image = _real_image("hpa28-synthetic-tiny")
    expected = Predictor("hpa28-synthetic-tiny", device="cpu").predict_one(image)

    predictor = Predictor("hpa28-synthetic-tiny", device="cpu", backend="onnxruntime")
    with pytest.warns(RuntimeWarning, match="onnxruntime backend failed.*using torch") as seen:
        got = [predictor.predict_one(image) for _ in range(3)]
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    assert predictor.backend == "torch"
    for pred in got:
        np.testing.assert_allclose(pred.probabilities, expected.probabilities, atol=1e-6)


def test_auto_is_torch_on_a_gpu_and_the_measured_runtime_on_a_cpu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("auto", torch.device("cuda")) == "torch"
        assert resolve_backend("auto", torch.device("mps")) == "torch"
        assert resolve_backend("torch", torch.device("cpu")) == "torch"
        assert resolve_backend("AUTO", torch.device("cpu")) == auto_cpu_backend()
    with pytest.warns(RuntimeWarning, match="CPU only; using torch on cuda"):
        assert resolve_backend("openvino", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", torch.device("cpu"))
    if is_installed("onnxruntime") and is_installed("openvino"):  # the guess before timing
        assert auto_cpu_backend() == ("openvino" if cpu_is_intel() else "onnxruntime")


def test_auto_times_both_runtimes_once_and_remembers_the_faster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With both installed, auto on a CPU is what was measured here, not a fixed rule."""
    _needs("onnxruntime")
    _needs("openvino")
    monkeypatch.setenv("NAPARI_HPA_CACHE", str(tmp_path / "cache"))
    model = load_model(resolve_model("hpa28-synthetic-tiny").path)
    threads = torch.get_num_threads()
    assert recorded_fastest(model, threads) is None

    first = Predictor(model, device="cpu", backend="auto")
    measured = first.ensure_backend()
    assert measured in RUNTIMES
    assert recorded_fastest(model, threads) == measured
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]

    for told in RUNTIMES:  # a later Predictor opens what the record says, untimed
        remember_fastest(model, threads, told)
        assert Predictor(model, device="cpu", backend="auto").ensure_backend() == told
    assert Predictor(model, device="cpu", backend="onnxruntime").ensure_backend() == "onnxruntime"

    (tmp_path / "cache" / RECORD).write_text("{not json")  # damaged: timed again, no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(model, device="cpu", backend="auto").ensure_backend() in RUNTIMES
    assert recorded_fastest(model, threads) in RUNTIMES


def test_the_timing_compares_real_runs_of_each_runtime() -> None:
    _needs("onnxruntime")
    _needs("openvino")
    model = load_model(resolve_model("hpa28-synthetic-tiny").path)
    runtimes = {name: open_runtime(model, name) for name in RUNTIMES}
    spec = model.spec.input
    batch = np.zeros((4, len(spec.channels), spec.size, spec.size), np.float32)
    seconds = time_runtimes(runtimes, batch)
    assert set(seconds) == set(RUNTIMES)
    assert all(0 < s < 10 for s in seconds.values())


_WITHOUT_RUNTIMES = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnxruntime", "openvino", "onnx"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Absent())
from napari_hpa.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_runtimes_everything_works_on_torch(tmp_path: Path) -> None:
    sample = sample_data_dir() / "hpa_57_F11_1_green.png"
    env = {**os.environ, "NAPARI_HPA_CACHE": str(tmp_path / "cache")}

    def predict(*extra: str) -> subprocess.CompletedProcess[str]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.csv')))}.csv"
        args = ["predict", str(sample), "--model", "hpa28-synthetic-tiny", "--out", str(out)]
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT_RUNTIMES, *args, *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done

    auto = predict("--backend", "auto")
    assert "Traceback" not in auto.stderr and "warning" not in auto.stderr.lower()
    named = predict("--backend", "openvino")
    assert named.stderr.count("openvino backend is not installed") == 1
    assert "using torch" in named.stderr and "Traceback" not in named.stderr
    assert not (tmp_path / "cache").exists()  # nothing was exported
    first, second = (tmp_path / "0.csv").read_text(), (tmp_path / "1.csv").read_text()
    assert first == second
