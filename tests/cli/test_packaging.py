"""The bundled models and samples are found after a non-editable install too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_hpa.core.model import registry

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "napari_hpa"


def test_checkout_resolves_repository_folders() -> None:
    assert registry.bundled_models_dir().resolve() == (PACKAGE / "bundled_models").resolve()
    assert registry.sample_data_dir().resolve() == (PACKAGE / "bundled_samples").resolve()


def test_non_editable_install_ships_models_and_samples(tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install . failed: {proc.stderr[-2000:]}")
    code = (
        "import json; from napari_hpa.core.model import registry as r; "
        "print(json.dumps({'models': str(r.bundled_models_dir()), "
        "'samples': str(r.sample_data_dir()), "
        "'ids': [m.id for m in r.list_models() if m.source == 'bundled']}))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["models"].startswith(str(target)), info
    assert info["samples"].startswith(str(target)), info
    expected = sorted(m.id for m in registry.list_models() if m.source == "bundled")
    assert expected and sorted(info["ids"]) == expected
    assert any(Path(info["samples"]).glob("*_red.png"))
