"""One current-model rule: the CLI uses the model chosen in napari and says so.

The scenario of issue 17: the user trained @3 and @4 of the HPA model, pressed
"Roll back" in napari (settings.json names @3), then ran ``napari-hpa predict``
and ``batch`` from a terminal. Both must use @3, print where the choice came from,
and ``--model`` must still win. ``napari-hpa models`` must say on which data each
figure was measured.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import batch_args, tiny_spec

from napari_hpa.cli import main
from napari_hpa.core.image.synth import write_samples
from napari_hpa.core.model import preferences
from napari_hpa.core.model.architectures import build_model
from napari_hpa.core.model.checkpoint import save_model
from napari_hpa.core.model.registry import DEFAULT_MODEL_NAMES, list_models, user_models_dir

NAME = DEFAULT_MODEL_NAMES[0]  # the bundled HPA model's name: its user versions are newer
#: The bundled version; the user's versions OLD and NEW come after it (as Retrain numbers them).
BUNDLED = max(e.version for e in list_models() if e.name == NAME and e.source == "bundled")
OLD, NEW = BUNDLED + 1, BUNDLED + 2


def _version(version: int, macro_f1: float | None = None) -> Path:
    """A fine-tuned version of the bundled HPA model, as Retrain saves it."""
    spec = tiny_spec(name=NAME, version=version, fit=64)
    if macro_f1 is not None:
        spec.metrics = {
            "macro_f1": macro_f1,
            "n_samples": 12,
            "evaluated_on": "validation split (also used for early stopping and the thresholds)",
        }
    torch.manual_seed(version)
    net = build_model(
        spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
    )
    return save_model(net, spec, user_models_dir())


@pytest.fixture
def rolled_back(tmp_path: Path) -> Path:
    """Versions OLD and NEW in the user's folder, "Roll back" to OLD; returns 2 HPA sets."""
    _version(OLD, 0.68)
    _version(NEW, 0.69)
    preferences.set_preferred_model(f"{NAME}@{OLD}", "hpa28")  # what Roll back writes
    samples = tmp_path / "s"
    write_samples(samples, n=2, size=64, seed=3)
    (samples / "labels.csv").rename(tmp_path / "labels.csv")
    return samples


def _models_in(table: Path) -> set[str]:
    return {row["model"] for row in csv.DictReader(table.open(encoding="utf-8"))}


def test_predict_uses_the_model_chosen_in_napari(
    rolled_back: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    assert main(["predict", str(rolled_back), "--device", "cpu", "--out", str(out)]) == 0
    assert _models_in(out) == {f"{NAME}@{OLD}"}
    assert f"using {NAME}@{OLD} (chosen in napari)" in capsys.readouterr().err

    given = tmp_path / "given.csv"
    argv = ["predict", str(rolled_back), "--model", f"{NAME}@{NEW}", "--out", str(given)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert _models_in(given) == {f"{NAME}@{NEW}"}  # --model still wins
    assert "using" not in capsys.readouterr().err  # named by the user: nothing to explain

    assert main(["predict", str(rolled_back), "--model", "nope@9"]) == 2  # a wrong --model
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model named 'nope'" in err[0]


def test_batch_and_evaluate_use_the_model_chosen_in_napari(
    rolled_back: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.csv"
    args = batch_args(rolled_back, out, Path("unused"))
    at = args.index("--model")
    del args[at : at + 2]  # no --model: the user's choice applies
    assert main(args) == 0
    assert _models_in(out) == {f"{NAME}@{OLD}"}
    assert f"using {NAME}@{OLD} (chosen in napari)" in capsys.readouterr().err

    labels = tmp_path / "labels.csv"
    argv = ["evaluate", "--data", str(rolled_back), "--labels", str(labels), "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"using {NAME}@{OLD} (chosen in napari)" in captured.err
    assert json.loads(captured.out[: captured.out.rindex("}") + 1])["model"] == f"{NAME}@{OLD}"


def test_without_a_choice_the_newest_then_a_vanished_choice_is_named(
    rolled_back: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preferences.set_preferred_model(None)
    out = tmp_path / "p.csv"
    assert main(["predict", str(rolled_back), "--device", "cpu", "--out", str(out)]) == 0
    assert _models_in(out) == {f"{NAME}@{NEW}"}
    assert f"using {NAME}@{NEW} (newest)" in capsys.readouterr().err

    preferences.set_preferred_model(f"{NAME}@{OLD}")
    shutil.rmtree(user_models_dir() / f"{NAME}-v{OLD}")
    assert main(["predict", str(rolled_back), "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"the model chosen in napari, {NAME}@{OLD}, is no longer there" in err
    assert f"using {NAME}@{NEW} (newest)" in err
    assert _models_in(out) == {f"{NAME}@{NEW}"}


def test_the_widgets_and_the_cli_resolve_alike(rolled_back: Path) -> None:
    choice = preferences.current_model()
    assert (choice.entry.id, choice.reason) == (f"{NAME}@{OLD}", "chosen in napari")
    assert preferences.model_to_use().path == choice.entry.path  # what the docks start with
    assert preferences.current_model(f"{NAME}@{NEW}").reason == "given with --model"


def test_models_says_on_which_data_each_figure_was_measured(
    rolled_back: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "MEASURED ON" in lines[0]
    words = [line.lstrip("* ").split()[:2] for line in lines]
    bundled = lines[words.index([NAME, str(BUNDLED)])]
    mine = lines[words.index([NAME, str(OLD)])]
    assert "held-out" in bundled  # the bundled model: held-out real images
    # its macro F1 over 28 classes is low on a held-out set of few classes: the ranking shows
    bundled_metrics = next(
        e.spec.metrics for e in list_models() if e.name == NAME and e.version == BUNDLED
    )
    assert f"top3={bundled_metrics['top3']:.3f}" in bundled
    assert f"macro_f1={bundled_metrics['macro_f1']:.3f}" in bundled
    assert "macro_f1=0.680" in mine and "validation split of its own training, 12 images" in mine
    assert mine.startswith("*") and not bundled.startswith("*")  # the one predict uses
    assert "not comparable" in out
    assert main(["models", "--json"]) == 0
    listed = {m["id"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[f"{NAME}@{OLD}"]["current"] is True
    assert listed[f"{NAME}@{OLD}"]["measured_on"].startswith("validation split of its own training")
