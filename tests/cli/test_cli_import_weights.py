"""``napari-hpa import-weights``: real state dicts import; pickles that run code never do."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tiny_model

from napari_hpa.cli import main
from napari_hpa.core.image.io import ImageData
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import CheckpointError, load_model
from napari_hpa.core.model.predict import Predictor
from napari_hpa.core.model.registry import list_models, resolve_model, user_models_dir
from napari_hpa.core.tasks import HPA_CHANNELS

TINY = ["--arch", "small_cnn", "--arch-kwargs", '{"width": 4, "depth": 2}', "--task", "hpa28"]


class _Evil:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("small_cnn", 4, 28, width=4, depth=2).state_dict()


def _image() -> ImageData:
    data = np.random.default_rng(1).random((4, 48, 40)).astype(np.float32)
    return ImageData(data, HPA_CHANNELS, (), "img", "img", {})


def test_a_state_dict_imports_and_predicts_the_same(tmp_path: Path, capsys) -> None:
    state = _state(seed=5)
    reference = build_model("small_cnn", 4, 28, width=4, depth=2)
    reference.load_state_dict(state)
    weights = tmp_path / "mine.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)
    rc = main(["import-weights", str(weights), *TINY, "--size", "32", "--strip-prefix", "module."])
    assert rc == 0, capsys.readouterr().err
    assert "imported mine@1" in capsys.readouterr().out
    entry = resolve_model("mine")  # in the user's models folder, found by the registry
    assert entry.source == "user" and entry.path.parent == user_models_dir()
    assert sorted(p.name for p in entry.path.iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(entry.path)
    x = torch.rand(3, 4, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.net(x), reference.eval()(x), rtol=1e-5, atol=1e-6)
    # The full prediction path gives the same probabilities as the original network.
    predictor = Predictor(entry, device="cpu")
    tiles, _ = predictor.prepare(_image())
    with torch.inference_mode():
        want = torch.sigmoid(reference(torch.from_numpy(tiles))).mean(0).numpy()
    np.testing.assert_allclose(predictor.predict_one(_image()).probabilities, want, atol=1e-6)
    # A second import becomes version 2; versions are never overwritten.
    assert main(["import-weights", str(weights), *TINY, "--strip-prefix", "module."]) == 0
    assert [e.version for e in list_models() if e.name == "mine"] == [1, 2]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle"])
def test_a_pickle_that_runs_code_is_refused(tmp_path: Path, capsys, container: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"head.weight": _Evil(marker)}
    if container == "torch_zip":
        torch.save(payload, evil)
        assert zipfile.is_zipfile(evil)  # a real torch archive, not a stand-in
    else:
        evil.write_bytes(pickle.dumps(payload))
    # Make sure the payload is live: plain unpickling would create the marker.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe)))
    assert probe.exists()
    rc = main(["import-weights", str(evil), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert "refused" in err and "weights_only=True" in err and "never runs code" in err
    if container == "torch_zip":
        assert "system" in err  # names the callable it refused to call (posix.system)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not marker.exists()
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


def test_wrong_shapes_and_keys_are_refused_clearly(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "other.pt"
    torch.save(build_model("small_cnn", 3, 10, width=4, depth=2).state_dict(), weights)
    assert main(["import-weights", str(weights), *TINY]) == 2
    err = capsys.readouterr().err
    assert "do not fit small_cnn" in err and "shape:" in err and "head.weight" in err
    assert "(10, " in err and "(28, " in err  # the file's shape and the expected one
    assert len(err.strip().splitlines()) == 1

    state = _state()
    state["extra.bias"] = torch.zeros(3)
    del state["head.bias"]
    torch.save(state, weights)
    assert main(["import-weights", str(weights), *TINY]) == 2
    err = capsys.readouterr().err
    assert "missing: head.bias" in err and "unexpected: extra.bias" in err
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


def test_user_errors_exit_2(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.pt"
    torch.save(_state(), weights)
    cases = [
        ([str(tmp_path / "missing.pt"), *TINY], "no such file"),
        ([str(weights), "--arch", "small_cnn"], "exactly one of --task"),
        ([str(weights), *TINY, "--task", "nope"], "unknown task"),
        (
            [str(weights), "--arch", "small_cnn", "--arch-kwargs", "{bad", "--task", "hpa28"],
            "not JSON",
        ),
        ([str(weights), "--arch", "small_cnn", "--classes", "a,b"], "needs --channels"),
        ([str(weights), *TINY, "--mean", "x"], "comma list of numbers"),
    ]
    for argv, message in cases:
        assert main(["import-weights", *argv]) == 2, argv
        assert message in capsys.readouterr().err


def test_loading_a_model_folder_never_unpickles(tmp_path: Path) -> None:
    """A hostile pickle renamed to model.safetensors in a model folder: refused, not run."""
    marker = tmp_path / "pwned"
    folder = write_tiny_model(tmp_path / "models")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"w": _Evil(marker)}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(folder)
    torch.save({"w": _Evil(marker)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(folder)
    with pytest.raises(CheckpointError):
        Predictor(folder, device="cpu")
    assert not marker.exists()


def test_console_script_refuses_in_one_line(tmp_path: Path) -> None:
    """The installed command, in its own process: exit 2, one line, nothing run."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Evil(marker)}, evil)
    env = {**os.environ, "NAPARI_HPA_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "napari_hpa", "import-weights", str(evil), *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("napari-hpa import-weights: error:")
    assert "refused" in done.stderr and not marker.exists()
