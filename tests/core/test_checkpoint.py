from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_spec, write_tiny_model

from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import (
    CheckpointError,
    ModelSpec,
    clean_partial_versions,
    import_torch_weights,
    load_model,
    read_spec,
    save_model,
)
from napari_hpa.core.tasks import get_task


def test_round_trip_preserves_weights_and_metadata(tmp_path: Path) -> None:
    spec = tiny_spec()
    spec.metrics = {"macro_f1": 0.5}
    spec.parent = "base@1"
    net = build_model(spec.arch, 4, 28, **spec.arch_kwargs).eval()
    folder = save_model(net, spec, tmp_path)
    assert folder.name == "tiny-v1"
    loaded = load_model(folder)
    assert loaded.spec.to_dict() == spec.to_dict()
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), net(x))
    meta = json.loads((folder / "model.json").read_text())
    for key in (
        "schema_version",
        "arch",
        "task",
        "input",
        "thresholds",
        "metrics",
        "data_fingerprint",
        "parent",
        "created",
        "version",
    ):
        assert key in meta


def test_half_precision_storage_is_smaller_and_close(tmp_path: Path) -> None:
    spec = tiny_spec()
    spec.arch_kwargs = {"width": 16, "depth": 3}
    net = build_model(spec.arch, 4, 28, **spec.arch_kwargs).eval()
    full = save_model(net, spec, tmp_path / "a")
    half = save_model(net, spec, tmp_path / "b", half=True)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        full / "model.safetensors"
    ).stat().st_size
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(half).net(x), net(x), atol=2e-2, rtol=2e-2)


def test_versions_are_immutable(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    with pytest.raises(CheckpointError, match="already exists"):
        write_tiny_model(tmp_path)


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    state = build_model("small_cnn", 4, 28, width=4, depth=2).state_dict()
    torch.save(state, folder / "model.safetensors")  # a torch zip pickle under the safetensors name
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(folder)
    os.remove(folder / "model.safetensors")
    torch.save(state, folder / "model.pt")
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        load_model(folder)


class _Evil:
    def __reduce__(self):  # runs a command when unpickled
        return (os.system, ("touch /tmp/napari_hpa_pwned",))


def test_import_torch_weights_never_executes_code(tmp_path: Path) -> None:
    marker = Path("/tmp/napari_hpa_pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        import_torch_weights(evil)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert import_torch_weights(good)["w"].sum() == 2


def test_bad_metadata_messages_name_the_file(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    del meta["arch"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.json: missing field\(s\): arch"):
        read_spec(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        read_spec(folder)


def test_wrong_shape_weights_are_refused(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["input"]["channels"] = ["gray"]
    meta["input"]["mean"], meta["input"]["std"] = [0.0], [1.0]
    meta["input"]["optional_channels"] = []
    meta["task"]["channels"] = ["gray"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(folder)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    spec = tiny_spec().to_dict()
    spec["schema_version"] = 99
    with pytest.raises(ValueError, match="newer"):
        ModelSpec.from_dict(spec)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    spec = tiny_spec()
    net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)

    def boom(_: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_model(net, spec, tmp_path, write_extra=boom)
    assert list(tmp_path.iterdir()) == []


_WRITER = """
import sys, time, torch
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import save_model
sys.path.insert(0, {tests!r})
from helpers import tiny_spec
spec = tiny_spec()
net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
def slow(folder):
    print("writing", flush=True)
    time.sleep(30)
save_model(net, spec, {root!r}, write_extra=slow)
"""


def test_kill_during_write_leaves_no_model(tmp_path: Path) -> None:
    code = _WRITER.format(tests=str(Path(__file__).parents[1] / "support"), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (tmp_path / "tiny-v1").exists()
    leftovers = clean_partial_versions(tmp_path)
    assert leftovers and list(tmp_path.iterdir()) == []


def test_task_metadata_drives_model(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path, task=get_task("hela10"), name="hela")
    loaded = load_model(folder)
    assert loaded.spec.task.classes[0] == "ActinFilaments"
    assert loaded.net(torch.rand(1, 1, 32, 32)).shape == (1, 10)
    time.sleep(0)
