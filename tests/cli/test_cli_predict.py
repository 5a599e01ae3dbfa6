"""The `napari-hpa` command: models, sample, predict, and --help everywhere."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_tiny_model

from napari_hpa.cli import COMMANDS, build_parser, main
from napari_hpa.core.model import registry


@pytest.fixture
def tiny_model(_isolated_home: Path) -> str:
    write_tiny_model(registry.user_models_dir(), name="tiny", fit=64)
    return "tiny"


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    assert {"models", "predict", "sample"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: napari-hpa" in capsys.readouterr().out
    assert len(COMMANDS) >= 3


def test_models_lists_bundled_and_user(tiny_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "hpa28" in out
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(m["id"] == "tiny@1" and m["source"] == "user" for m in listed)


def test_sample_then_predict_csv(tmp_path: Path, tiny_model: str) -> None:
    samples = tmp_path / "s"
    assert main(["sample", str(samples), "--n", "3", "--size", "96", "--seed", "1"]) == 0
    assert len(list(samples.glob("*_red.png"))) == 3
    out = tmp_path / "p.csv"
    assert main(["predict", str(samples), "--model", tiny_model, "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    header = list(rows[0])
    assert header[:2] == ["image", "model"] and header[-1] == "predicted" and len(header) == 28 + 3
    assert header[2] == "Nucleoplasm" and header[-2] == "Rods & rings"
    for row in rows:
        assert row["model"] == "tiny@1"
        probs = [float(row[c]) for c in header[2:-1]]
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert all(0 <= int(i) < 28 for i in row["predicted"].split())


def test_predict_json_and_cam(tmp_path: Path, tiny_model: str) -> None:
    samples = tmp_path / "s"
    main(["sample", str(samples), "--n", "1", "--size", "96"])
    member = next(samples.glob("*_green.png"))
    out = tmp_path / "p.json"
    assert main(["predict", str(member), "--model", tiny_model, "--out", str(out), "--cam"]) == 0
    payload = json.loads(out.read_text())
    assert len(payload["results"]) == 1 and payload["errors"] == []
    assert len(payload["results"][0]["probabilities"]) == 28
    cams = list((tmp_path / "p_cams").glob("*_cam.tif"))
    assert len(cams) == 1
    import tifffile

    assert tifffile.imread(cams[0]).shape[-2:] == (96, 96)


def test_zero_byte_png_exits_2_naming_the_file(
    tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "s"
    main(["sample", str(samples), "--n", "1", "--size", "64"])
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    out = tmp_path / "p.csv"
    code = main(["predict", str(bad), str(samples), "--model", tiny_model, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and "Traceback" not in err
    assert len(list(csv.DictReader(out.open()))) == 1  # the good image was still predicted


def test_bad_paths_and_models_are_one_line_errors(
    tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(tmp_path / "nope.png"), "--model", tiny_model]) == 2
    assert "nope.png" in capsys.readouterr().err
    img = tmp_path / "s"
    main(["sample", str(img), "--n", "1", "--size", "64"])
    assert main(["predict", str(img), "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", str(img), "--model", tiny_model, "--out", str(tmp_path / "x.txt")]) == 2


def test_console_script_end_to_end(tmp_path: Path, tiny_model: str) -> None:
    """A real subprocess, as a user runs it (python -m is the console script's target)."""
    samples = tmp_path / "s"
    run = [sys.executable, "-m", "napari_hpa"]
    subprocess.run(
        [*run, "sample", str(samples), "--n", "2", "--size", "64"], check=True, timeout=120
    )
    out = tmp_path / "p.csv"
    proc = subprocess.run(
        [*run, "predict", str(samples), "--model", tiny_model, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list(csv.DictReader(out.open()))) == 2
    bad = tmp_path / "zero.png"
    bad.write_bytes(b"")
    proc = subprocess.run(
        [*run, "predict", str(bad), "--model", tiny_model],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "zero.png" in proc.stderr and "Traceback" not in proc.stderr


def test_empty_path_is_refused_not_read_as_the_current_folder(
    tmp_path: Path, tiny_model: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """`napari-hpa predict "$UNSET"` must not classify every image under the working folder."""
    from napari_hpa.core.image.synth import write_samples

    write_samples(tmp_path, n=1, size=64)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "", "--model", tiny_model]) == 2
    captured = capsys.readouterr()
    assert "empty path" in captured.err and "synth_0000" not in captured.out
    assert main(["batch", "", "--out", str(tmp_path / "r.csv"), "--model", tiny_model]) == 2
    assert "empty path" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_predict_real_protein_only_and_no_yellow_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 17, defect 4: a Kaggle ``_green.png`` alone and a DULoc set without its
    yellow file both get a prediction from the bundled HPA model (protein is all it needs)."""
    from conftest import shared_data

    kaggle = shared_data("hpa_kaggle2018_single_channels") / "train_sample"
    green = sorted(kaggle.glob("*_green.png"))[0]
    duloc = shared_data("hpa_duloc_single_cells") / "images"
    for color in ("red", "green", "blue"):
        (tmp_path / f"comb1_mixed_img0_{color}.jpg").symlink_to(
            duloc / f"comb1_mixed_img0_{color}.jpg"
        )
    out = tmp_path / "p.csv"
    argv = ["predict", str(green), str(tmp_path), "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    rows = {row["image"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert set(rows) == {
        str(green.parent / green.name[: -len("_green.png")]),
        str(tmp_path / "comb1_mixed_img0"),
    }
    for row in rows.values():
        assert row["model"].startswith(registry.DEFAULT_MODEL_NAMES[0])
        assert row["predicted"].strip()  # at least one location
    assert "error" not in capsys.readouterr().err
