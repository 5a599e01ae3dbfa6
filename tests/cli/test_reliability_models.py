"""Issue 18, the model half: the models folder, model files and training under bad input.

Concurrent saves of one name, NaN models and diverging runs, names that would leave
the models folder, terminal escapes in ``model.json``, deeply nested or oversized
``model.json``, untrusted sizes, full / read-only / misplaced models folders, label
CSV tokens, and what a killed save leaves. Real files, real processes where the
behaviour needs one (a second writer, SIGKILL), a real tmpfs for the full disk.
Each bad input is counted in ``reliability_counts``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import tiny_spec, write_tiny_model
from reliability_counts import counted
from safetensors.torch import load_file, save_file

from napari_hpa.cli import main
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model import registry
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import (
    CheckpointError,
    clean_partial_versions,
    load_model,
    read_spec,
    save_model,
)
from napari_hpa.core.model.names import check_model_name
from napari_hpa.core.tasks import get_task
from napari_hpa.core.train.config import TrainConfig, TrainResult
from napari_hpa.core.train.data import DataError, TrainData, build_task, load_csv
from napari_hpa.core.train.loop import train_model
from napari_hpa.core.train.report import save_result

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- helpers
def one_line(err: str, *needles: str) -> str:
    """``err`` is one line, no traceback, holding every needle; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@contextlib.contextmanager
def bounded_memory(extra: int = 2 * 2**30) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra`` (soft limit).

    A size that is not bounded before allocating then fails with MemoryError here
    instead of taking the shared machine's memory; the hard limit is untouched.
    """
    vm = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(hard, vm + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging when the block runs longer than ``seconds``."""

    def expire(signum, frame):  # noqa: ARG001 - signal handler signature
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def edit_meta(folder: Path, change) -> Path:
    meta = folder / "model.json"
    data = json.loads(meta.read_text())
    change(data)
    meta.write_text(json.dumps(data))
    return folder


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight tiny HPA sets with a Kaggle CSV of numeric ids."""
    return write_samples(tmp_path_factory.mktemp("imgs"), n=8, size=32, seed=5, classes=[0, 21])


def train_argv(images: Path, out: Path | None, *extra: str) -> list[str]:
    argv = ["train", "--data", str(images), "--labels", str(images / "labels.csv"),
            "--size", "32", "--width", "4", "--batch-size", "4", "--workers", "0",
            "--epochs", "1", "--progress", "none"]  # fmt: skip
    return [*argv, *(["--out-root", str(out)] if out else []), *extra]


def weights_file(path: Path, width: int = 4) -> Path:
    """A plain state dict of a small_cnn (depth 2) for hpa28, as import-weights takes it."""
    torch.manual_seed(0)
    net = build_model("small_cnn", 4, 28, width=width, depth=2)
    torch.save(net.state_dict(), path)
    return path


def import_argv(weights: Path, *extra: str, width: int = 4) -> list[str]:
    kwargs = json.dumps({"width": width, "depth": 2})
    return ["import-weights", str(weights), "--arch", "small_cnn", "--arch-kwargs", kwargs,
            "--task", "hpa28", "--size", "32", *extra]  # fmt: skip


# ----------------------------------------------------------------------------- item 4
_COMPETITOR = """
import sys
sys.path.insert(0, {support!r})
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import save_model
from helpers import tiny_spec
spec = tiny_spec(name={name!r}, version=1)
net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
print(save_model(net, spec, {root!r}))
"""


def _a_result(name: str) -> tuple[TrainResult, TrainConfig, TrainData]:
    spec = tiny_spec(name=name)
    torch.manual_seed(1)
    net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
    result = TrainResult("completed", spec=spec, net=net, metrics={"macro_f1": 0.5})
    config = TrainConfig(name=name, arch_kwargs={"width": 4, "depth": 2})
    return result, config, TrainData(spec.task, [], origin="test")


def test_a_run_saving_while_another_claims_its_version_keeps_its_model(tmp_path: Path) -> None:
    """While this run writes version 1 of 'same', a real second process saves 'same' too.

    Before: the rename failed with 'Directory not empty' and the finished model was
    deleted. Now the run takes version 2; both versions load.
    """
    root = tmp_path / "models"
    result, config, data = _a_result("same")
    other: list[str] = []

    def competitor(folder: Path) -> None:  # runs inside the first save, before its rename
        if not other:
            code = _COMPETITOR.format(support=str(SUPPORT), name="same", root=str(root))
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=120, env=env)  # fmt: skip
            assert done.returncode == 0, done.stderr
            other.append(done.stdout.strip())

    with counted("concurrent_same_name", "save_result"):
        path = save_result(result, config, data, root=root, extra_files=competitor)
        assert Path(other[0]) == root / "same-v1"
        assert path == root / "same-v2" and read_spec(path).version == 2
        assert (path / "README.md").read_text().startswith("# same v2")  # the card follows
        for folder in (root / "same-v1", root / "same-v2"):
            load_model(folder)
        assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_two_train_processes_with_one_name_both_save(images: Path, tmp_path: Path) -> None:
    """Two real ``napari-hpa train --name X`` at once: two versions, both exit 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "napari_hpa", *train_argv(images, tmp_path, "--name", "twin")]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(Path(o).name for o in outs) == ["twin-v1", "twin-v2"]


# ----------------------------------------------------------------------------- item 5
def test_lr_1e12_stops_diverged_and_writes_no_nan_model(
    images: Path, tmp_path: Path, capsys
) -> None:
    with counted("lr_1e12", "train"):
        rc = main(train_argv(images, tmp_path, "--lr", "1e12", "--epochs", "3", "--name", "nan"))
        err = capsys.readouterr().err
        assert rc == 2
        one_line(err, "diverged", "no model was written")
        assert not list(tmp_path.glob("nan-v*"))


def test_a_run_that_diverges_later_keeps_its_best_finite_epoch(
    images: Path, tmp_path: Path
) -> None:
    """NaN outputs from the second epoch on (a global forward hook): the run stops as
    'diverged' and saves epoch 1, whose weights are finite."""
    data = load_csv(images, images / "labels.csv")
    config = TrainConfig(name="late", size=32, epochs=4, batch_size=4, workers=0,
                         arch_kwargs={"width": 4}, out_root=str(tmp_path), patience=0)  # fmt: skip
    epochs: list[int] = []

    def poison(module, args, output):  # noqa: ARG001 - torch's hook signature
        if epochs and module.training and isinstance(output, torch.Tensor):
            return output * float("nan")
        return None

    def progress(event: dict) -> None:
        if event["event"] == "epoch":
            epochs.append(event["epoch"])

    handle = torch.nn.modules.module.register_module_forward_hook(poison)
    try:
        with counted("loss_nan_at_epoch_2", "train_model"):
            result = train_model(config, data, progress)
            assert result.status == "diverged" and result.best_epoch == 1
            assert "diverged" in result.extra["stop_reason"]
            spec = read_spec(result.path)
            assert spec.training["status"] == "diverged"
            loaded = load_model(result.path)  # loads: its weights are finite
            assert all(torch.isfinite(v).all() for v in loaded.net.state_dict().values())
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "kind,change,needle",
    [
        ("std_zero", lambda d: d["input"].__setitem__("std", [1.0, 0.0, 1.0, 1.0]), "std[1]"),
        ("std_negative", lambda d: d["input"].__setitem__("std", [1.0, 1.0, -2.0, 1.0]), "std[2]"),
        ("mean_nan", lambda d: d["input"].__setitem__("mean", [float("nan")] * 4), "mean[0]"),
        ("threshold_nan", lambda d: d.__setitem__("thresholds", [float("nan")] * 28), "thresh"),
    ],
)
def test_a_model_that_would_predict_nan_is_refused_at_load(
    kind: str, change, needle: str, tmp_path: Path, capsys
) -> None:
    folder = edit_meta(write_tiny_model(tmp_path, name=kind.replace("_", "-")), change)
    image = write_samples(tmp_path / "img", n=1, size=32)
    with counted(kind, "load_model + predict"):
        with pytest.raises(CheckpointError) as info:
            load_model(folder)
        message = str(info.value)
        assert "model.json" in message and needle in message and "\n" not in message
        rc = main(["predict", str(image), "--model", str(folder), "--device", "cpu"])
        assert rc == 2
        one_line(capsys.readouterr().err, str(folder), needle)


@pytest.mark.parametrize("kind", ["weights_nan", "weights_inf", "running_var_negative"])
def test_weights_that_give_nan_are_refused_at_load_and_at_save(
    kind: str, tmp_path: Path, capsys
) -> None:
    folder = write_tiny_model(tmp_path / "m", name="poisoned")
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("running_var" if "var" in kind else "weight"))
    state[key] = state[key].clone()
    state[key].view(-1)[0] = {"weights_nan": float("nan"), "weights_inf": float("inf")}.get(
        kind, -1.0
    )
    save_file(state, str(folder / "model.safetensors"))
    with counted(kind, "load_model + import-weights"):
        with pytest.raises(CheckpointError, match="NaN|negative") as info:
            load_model(folder)
        assert str(info.value).startswith(str(folder / "model.safetensors"))
        pt = tmp_path / "poisoned.pt"
        torch.save({k: v for k, v in state.items()}, pt)
        out = tmp_path / "imported"
        assert main([*import_argv(pt, "--out", str(out))]) == 2
        one_line(capsys.readouterr().err, "poisoned")
        assert not list(out.glob("poisoned-v*"))


# ----------------------------------------------------------------------------- item 10
BAD_NAMES = ["../../x", "a/b", "..", "a@2", ".hidden", "_private", "a\x1b[2Jb", "a\nb",
             "a\rb", "x" * 81, "", "a*", "\u202eevil", "a\\b"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_bad_model_names_are_refused_by_every_writer(
    name: str, images: Path, tmp_path: Path, capsys
) -> None:
    models = tmp_path / "home" / "models"
    outside = tmp_path / "home"
    with counted(f"name {name!r}", "check/save/train/import-weights"):
        with pytest.raises(ValueError, match="bad model name"):
            check_model_name(name)
        spec = tiny_spec(name="ok")
        spec.name = name  # a caller that changes the name after the spec was made
        net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
        with pytest.raises(CheckpointError, match="bad model name"):
            save_model(net, spec, models)
        with pytest.raises(CheckpointError, match="bad model name"):
            registry.save_new_version(net, spec, models)
        if name:  # argparse takes "" as a value too, but an empty --name is the same rule
            rc = main(train_argv(images, models, "--name", name))
            assert rc == 2
            line = one_line(capsys.readouterr().err, "bad model name")
            assert "\x1b" not in line and "\r" not in line
            pt = weights_file(tmp_path / "w.pt")
            assert main([*import_argv(pt, "--out", str(models), "--name", name)]) == 2
            one_line(capsys.readouterr().err, "bad model name")
        assert tree(outside) <= {"models"}, tree(outside)  # nothing written, inside or out


def test_a_shared_model_named_to_escape_is_never_used_as_a_parent(tmp_path: Path, capsys) -> None:
    """Retrain takes the new name from the parent's model.json: a shared model named
    ../../../x must not be listed or resolved, so no run can start from it."""
    user = registry.user_models_dir()
    good = write_tiny_model(user, name="good")
    evil = write_tiny_model(user, name="evil")
    edit_meta(evil, lambda d: d.__setitem__("name", "../../../x"))
    with counted("model.json name ../../../x", "registry + train --base"):
        problems: list[str] = []
        names = {e.name for e in registry.list_models(problems=problems)}
        assert "good" in names and "../../../x" not in names
        assert len(problems) == 1 and "bad model name" in problems[0]
        with pytest.raises(CheckpointError, match="bad model name"):
            registry.resolve_model(str(evil))
        db = tmp_path / "a.sqlite"
        db.write_bytes(b"")
        rc = main(["train", "--base", str(evil), "--db", str(db), "--progress", "none"])
        assert rc == 2
        one_line(capsys.readouterr().err, "bad model name")
        assert sorted(p.name for p in user.iterdir()) == sorted([good.name, evil.name])


@pytest.mark.parametrize("name", ["a b", "ü-модель", "x.y+z", "3", "mine-v2", "A" * 80])
def test_every_name_that_can_be_saved_resolves(name: str) -> None:
    spec = tiny_spec(name=name)
    net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
    first = registry.save_new_version(net, spec)
    second = registry.save_new_version(net, tiny_spec(name=name))
    assert registry.resolve_model(name).path == second
    assert registry.resolve_model(f"{name}@1").path == first
    assert first.parent == second.parent == registry.user_models_dir()


# ----------------------------------------------------------------------------- item 11
def test_models_listing_never_prints_escapes_or_newlines(capsys) -> None:
    user = registry.user_models_dir()
    shown = write_tiny_model(user, name="shown")

    def forge(d: dict) -> None:
        d["task"]["name"] = "t\x1b[2J\x1b[H"
        d["task"]["kind"] = "multilabel"
        d["metrics"] = {"macro_f1": 0.5, "headline_set": "x\nFORGED-ROW  9  hpa28\r\x1b]0;t\x07"}
        d["input"]["channels"] = ["a\nb", "c\x1b[31m", "\u202ed", "e"]
        d["task"]["channels"] = d["input"]["channels"]
        d["input"]["optional_channels"] = []

    edit_meta(shown, forge)
    bad = user / "weird\x1b[2Jfolder"
    bad.mkdir()
    (bad / "model.json").write_text('{"name": "bad\\u001b[2Jname"}')
    with counted("escapes in model.json", "models"):
        rc = main(["models"])
        out, err = capsys.readouterr()
        assert rc == 0
        for text in (out, err):
            assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
            assert "\x07" not in text
        assert not any(line.startswith("FORGED-ROW") for line in out.splitlines())
        assert "\\x1b[2J" in out and "x\\nFORGED-ROW" in out  # shown, escaped, in its row
        assert len(err.strip().splitlines()) == 1 and "weird\\x1b[2Jfolder" in err
        rc = main(["models", "--json"])
        payload = json.loads(capsys.readouterr().out)
        assert rc == 0 and "shown" in {m["name"] for m in payload}


# ----------------------------------------------------------------------------- item 13
NESTED = {
    "unbalanced_100k": "[" * 100_000,
    "balanced_50k": "[" * 50_000 + "]" * 50_000,
    "deep_in_metrics": None,  # a valid object whose metrics nest 200 levels
    "oversized_5MB": None,
}


@pytest.mark.parametrize("kind", list(NESTED))
def test_a_deeply_nested_model_json_hides_no_other_model(kind: str, tmp_path: Path, capsys) -> None:
    user = registry.user_models_dir()
    write_tiny_model(user, name="fine")
    broken = write_tiny_model(user, name="broken")
    meta = broken / "model.json"
    if kind == "deep_in_metrics":
        data = json.loads(meta.read_text())
        data["metrics"] = json.loads("[" * 200 + "]" * 200)
        meta.write_text(json.dumps(data))
    elif kind == "oversized_5MB":
        data = json.loads(meta.read_text())
        data["description"] = "x" * (5 * 2**20)
        meta.write_text(json.dumps(data))
    else:
        meta.write_text(NESTED[kind])
    image = write_samples(tmp_path / "img", n=1, size=32)
    with counted(f"model.json {kind}", "models + predict + resolve"):
        rc = main(["models"])
        out, err = capsys.readouterr()
        assert rc == 0 and "fine" in out
        one_line(err, str(broken), "skipped")
        assert registry.resolve_model("fine").name == "fine"
        rc = main(["predict", str(image), "--model", "fine", "--device", "cpu"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert "Traceback" not in captured.err
        with pytest.raises(LookupError, match="broken model folder"):
            registry.resolve_model("broken")


def test_a_deeply_nested_settings_file_breaks_no_command(tmp_path: Path, capsys) -> None:
    """settings.json (napari's "Use this model") nested 100 000 deep: every command that
    picks the current model still runs, with the default model."""
    write_tiny_model(registry.user_models_dir(), name="fine")
    (registry.user_home() / "settings.json").write_text("[" * 100_000)
    image = write_samples(tmp_path / "img", n=1, size=32)
    with counted("settings.json nested 100k", "models + predict"):
        assert main(["models"]) == 0
        captured = capsys.readouterr()
        assert "fine" in captured.out and "Traceback" not in captured.err
        assert main(["predict", str(image), "--model", "fine", "--device", "cpu"]) == 0
        assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 14
UNTRUSTED = {
    "size_0": (lambda d: d["input"].__setitem__("size", 0), "input.size"),
    "size_200000": (lambda d: d["input"].__setitem__("size", 200_000), "input.size"),
    "size_text": (lambda d: d["input"].__setitem__("size", "224"), "input.size"),
    "fit_10e7": (lambda d: d["input"].__setitem__("fit", 10**7), "input.fit"),
    "width_10e6": (lambda d: d["arch_kwargs"].__setitem__("width", 10**6), "width"),
    "depth_10e5": (lambda d: d["arch_kwargs"].__setitem__("depth", 10**5), "depth"),
    "width_x_depth": (
        lambda d: d.__setitem__("arch_kwargs", {"width": 256, "depth": 8}),
        "parameters",
    ),  # fmt: skip
    "version_10e30": (lambda d: d.__setitem__("version", 10**30), "version"),
    "version_inf": (lambda d: d.__setitem__("version", 1e400), "version"),
    "classes_20000": (
        lambda d: (
            d["task"].__setitem__("classes", [f"c{i}" for i in range(20000)]),
            d.__setitem__("thresholds", []),
        ),
        "classes",
    ),  # fmt: skip
}


@pytest.mark.parametrize("kind", list(UNTRUSTED))
def test_untrusted_sizes_in_model_json_are_refused_before_allocating(
    kind: str, tmp_path: Path
) -> None:
    change, needle = UNTRUSTED[kind]
    folder = edit_meta(write_tiny_model(tmp_path, name="sized"), change)
    with counted(f"model.json {kind}", "load_model"):
        t0 = time.monotonic()
        with bounded_memory(), deadline(30), pytest.raises(CheckpointError) as info:
            load_model(folder)
        assert time.monotonic() - t0 < 10
        message = str(info.value)
        assert message.startswith(str(folder / "model.json")) and needle in message, message


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["sample", "{out}", "--size", "60000"], "--size"),
        (["sample", "{out}", "--n", "100000000"], "--n"),
        (["train", "--data", "{out}", "--labels", "x.csv", "--size", "200000"], "--size"),
        (["train", "--data", "{out}", "--labels", "x.csv", "--width", "1000000"], "width"),
        (["train", "--data", "{out}", "--labels", "x.csv", "--batch-size", "10000000"], "batch"),
        (["train", "--data", "{out}", "--labels", "x.csv", "--fit", "0"], "--fit"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_untrusted_sizes_on_the_command_line_are_refused(
    argv: list[str], needle: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    with counted(" ".join(argv[:1] + argv[-2:]), argv[0]), bounded_memory(), deadline(30):
        rc = main([a.format(out=out) for a in argv])
        assert rc == 2
        one_line(capsys.readouterr().err, needle)
        assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- item 16
def _fill(mount: Path) -> None:
    with contextlib.suppress(OSError), open(mount / "filler", "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def test_a_full_disk_when_saving_a_model_is_one_line(
    tiny_tmpfs: Path, images: Path, tmp_path: Path, capsys
) -> None:
    pt = weights_file(tmp_path / "big.pt", width=32)  # ~270 KB: more than the 64 KiB tmpfs
    with counted("full disk", "import-weights"):
        rc = main([*import_argv(pt, "--out", str(tiny_tmpfs), "--name", "big", width=32)])
        assert rc == 2
        one_line(capsys.readouterr().err, str(tiny_tmpfs), "No space left")
        assert tree(tiny_tmpfs) == set()  # no .tmp-* folder, no half model
    with counted("not enough room", "train (before the run)"):
        rc = main(train_argv(images, tiny_tmpfs, "--name", "roomy", "--progress", "jsonl"))
        captured = capsys.readouterr()
        assert rc == 2
        one_line(captured.err, str(tiny_tmpfs), "MiB free")
        events = [json.loads(line)["event"] for line in captured.out.splitlines()]
        assert "start" not in events and "epoch" not in events and events[-1] == "error"
    _fill(tiny_tmpfs)
    with counted("disk full", "train (before the run)"):
        rc = main(train_argv(images, tiny_tmpfs / "sub", "--name", "full"))
        one_line(capsys.readouterr().err, "No space left")
        assert rc == 2


@pytest.fixture
def read_only_dir(tiny_tmpfs: Path) -> Path:
    """The tmpfs remounted read-only: refused even to root."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
    return tiny_tmpfs


def test_a_read_only_models_folder_is_said_before_training(
    read_only_dir: Path, images: Path, tmp_path: Path, capsys
) -> None:
    with counted("read-only models folder", "train + import-weights"):
        t0 = time.monotonic()
        rc = main(train_argv(tmp_path / "no-data-needed", read_only_dir, "--name", "ro"))
        assert rc == 2 and time.monotonic() - t0 < 30
        one_line(capsys.readouterr().err, str(read_only_dir), "Read-only")
        pt = weights_file(tmp_path / "w.pt")
        assert main([*import_argv(pt, "--out", str(read_only_dir), "--name", "ro")]) == 2
        one_line(capsys.readouterr().err, str(read_only_dir), "Read-only")


def test_home_or_out_root_that_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("NAPARI_HPA_HOME", str(home))
    missing = tmp_path / "not-read"  # the data are not even looked at: the output comes first
    with counted("NAPARI_HPA_HOME is a file", "train + import-weights + models"):
        assert main(train_argv(missing, None, "--name", "h")) == 2
        one_line(capsys.readouterr().err, str(home), "NAPARI_HPA_HOME")
        pt = weights_file(tmp_path / "w.pt")
        assert main([*import_argv(pt, "--name", "h")]) == 2
        one_line(capsys.readouterr().err, str(home), "NAPARI_HPA_HOME")
        assert main(["models"]) == 0  # the bundled models are still listed
        assert "Traceback" not in capsys.readouterr().err
        assert home.read_text() == "not a folder"
    with counted("--out-root is a file", "train"):
        assert main(train_argv(missing, home, "--name", "h")) == 2
        one_line(capsys.readouterr().err, str(home), "is a file")


# ----------------------------------------------------------------------------- item 19
@pytest.mark.parametrize("token", ["abc", "1.5", "-1", "²", "99", "100000000000000000000000"])
def test_a_bad_label_token_blames_its_own_row(
    token: str, images: Path, tmp_path: Path, capsys
) -> None:
    rows = list(csv.reader((images / "labels.csv").open()))
    rows[5][1] = f"0 {token}"  # the fifth image; every other row is fine
    bad_id = rows[5][0]
    labels = tmp_path / "bad.csv"
    with labels.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with counted(f"label token {token!r}", "load_csv + train"), bounded_memory(), deadline(60):
        for task in (None, "hpa28"):
            with pytest.raises(DataError) as info:
                load_csv(images, labels, task)
            assert f"Id {bad_id!r}" in str(info.value) and str(labels) in str(info.value)
            others = [r[0] for r in rows[1:] if r[0] != bad_id]
            assert not any(f"Id {o!r}" in str(info.value) for o in others)
        argv = ["train", "--data", str(images), "--labels", str(labels), "--out-root",
                str(tmp_path / "m"), "--progress", "none"]  # fmt: skip
        assert main(argv) == 2
        one_line(capsys.readouterr().err, bad_id)


def test_numeric_kaggle_ids_mean_the_hpa_classes_through_train_and_evaluate(
    images: Path, tmp_path: Path, capsys
) -> None:
    """Only ids 0 and 21 occur: the model still has the 28 HPA classes, by name, and
    evaluating on the same CSV reads id 21 as Plasma membrane."""
    with counted("numeric ids without --task", "train + evaluate"):
        assert main(train_argv(images, tmp_path, "--name", "kaggle")) == 0
        folder = Path(capsys.readouterr().out.strip())
        task = read_spec(folder).task
        assert task.name == "hpa28" and task.classes == get_task("hpa28").classes
        rc = main(["evaluate", "--model", str(folder), "--data", str(images),
                   "--labels", str(images / "labels.csv"), "--device", "cpu"])  # fmt: skip
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert captured.out.strip().splitlines()[-1].startswith("macro_f1=")


def test_numeric_ids_read_alike_in_training_and_evaluation_of_an_hpa_subset() -> None:
    """``train --task Nucleoplasm "Plasma membrane"`` reads ids as HPA's numbering; the
    model's task must read the same CSV the same way when it is evaluated."""
    rows = [["0"], ["21"], ["0", "21"], ["5"]]
    with counted("numeric ids, HPA subset task", "build_task train vs evaluate"):
        task, trained = build_task(rows, ["Nucleoplasm", "Plasma membrane"])
        again, evaluated = build_task(rows, task)
        assert trained == evaluated == [(0,), (1,), (0, 1), ()]


# ----------------------------------------------------------------------------- item 21
_SLOW_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {support!r})
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import save_model
from helpers import tiny_spec
spec = tiny_spec(name={name!r}, version=1)
net = build_model(spec.arch, 4, 28, **spec.arch_kwargs)
def until(path):
    end = time.monotonic() + 120
    while not Path(path).exists() and time.monotonic() < end:
        time.sleep(0.05)
def wait(folder):
    print("writing", flush=True)
    until({go!r})
print("ready", flush=True)
until({start!r})
print(save_model(net, spec, {root!r}, write_extra=wait), flush=True)
"""


def _writer(root: Path, name: str, start: Path, go: Path) -> subprocess.Popen:
    """A real process saving ``name`` to ``root`` once ``start`` exists; it holds its
    temporary folder until ``go`` exists."""
    code = _SLOW_WRITER.format(
        support=str(SUPPORT), name=name, root=str(root), start=str(start), go=str(go)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def _says(proc: subprocess.Popen, word: str) -> None:
    assert proc.stdout is not None and proc.stdout.readline().strip() == word


def test_a_killed_save_is_cleaned_on_the_next_listing_and_a_live_one_never(
    tmp_path: Path,
) -> None:
    user = registry.user_models_dir()
    write_tiny_model(user, name="kept")
    now, start, go = tmp_path / "now", tmp_path / "start", tmp_path / "go"
    now.touch()
    killed = _writer(user, "killed", now, tmp_path / "never")
    live = _writer(user, "live", start, go)  # both start at once: half the wait
    try:
        _says(killed, "ready")
        _says(killed, "writing")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        (left,) = user.glob(".tmp-killed-v1*")
        with counted("SIGKILL during a save", "list_models + save"):
            ids = [e.id for e in registry.list_models()]
            assert "kept@1" in ids
            assert not left.exists(), "the dead writer's leftover is removed on listing"
            _says(live, "ready")
            start.touch()
            _says(live, "writing")
            (live_tmp,) = user.glob(".tmp-live-v1*")
            registry.save_new_version(*_net_and_spec("other"))  # a save cleans too ...
            assert live_tmp.exists(), "... but never a live writer's folder"
            assert clean_partial_versions(user) == [] and live_tmp.exists()
        go.touch()
        out, _ = live.communicate(timeout=120)
        assert live.returncode == 0 and Path(out.strip()) == user / "live-v1"
        load_model(user / "live-v1")
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _net_and_spec(name: str):
    spec = tiny_spec(name=name)
    return build_model(spec.arch, 4, 28, **spec.arch_kwargs), spec


def test_leftovers_of_unknown_writers_go_only_once_old(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    old = root / ".tmp-x-v1-0123abcd"  # an older napari-hpa's name: no writer recorded
    young = root / ".tmp-y-v1-4567ef01"
    other_host = root / ".tmp-z-v1~elsewhere~1~1~abcdef12"
    for folder in (old, young, other_host):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    with counted("leftovers of unknown writers", "clean_partial_versions"):
        assert clean_partial_versions(root) == [old]
        assert young.exists() and other_host.exists()
        os.utime(other_host, (hour_ago, hour_ago))
        assert clean_partial_versions(root) == [other_host]
