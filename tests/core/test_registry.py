from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_tiny_model

from napari_hpa.core.model import registry


def test_user_models_found_and_resolved(_isolated_home: Path) -> None:
    root = registry.user_models_dir()
    write_tiny_model(root, name="mine", version=1)
    write_tiny_model(root, name="mine", version=2)
    ids = [m.id for m in registry.list_models()]
    assert "mine@1" in ids and "mine@2" in ids
    assert registry.resolve_model("mine").version == 2
    assert registry.resolve_model("mine@1").version == 1
    assert registry.resolve_model(root / "mine-v1").source == "path"
    assert registry.next_version("mine") == 3
    assert registry.next_version("new") == 1


def test_resolve_errors_are_helpful(_isolated_home: Path) -> None:
    write_tiny_model(registry.user_models_dir(), name="mine")
    with pytest.raises(LookupError, match="no model named 'other'"):
        registry.resolve_model("other")
    with pytest.raises(LookupError, match="no version 7"):
        registry.resolve_model("mine@7")


def test_home_env_override(_isolated_home: Path) -> None:
    assert registry.user_home() == _isolated_home
    assert registry.user_models_dir() == _isolated_home / "models"


def test_broken_model_folder_is_skipped_with_warning(_isolated_home: Path) -> None:
    bad = registry.user_models_dir() / "broken"
    bad.mkdir(parents=True)
    (bad / "model.json").write_text("{}")
    with pytest.warns(UserWarning, match="skipping model folder"):
        models = registry.list_models()
    assert all(m.name != "broken" for m in models)


def test_bundled_models_are_listed() -> None:
    bundled = [m for m in registry.list_models() if m.source == "bundled"]
    assert bundled, f"no bundled model in {registry.bundled_models_dir()}"
    assert registry.default_model().source == "bundled"


def test_card_reads_text_and_report_figures(_isolated_home: Path) -> None:
    folder = write_tiny_model(registry.user_models_dir(), name="carded")
    entry = registry.resolve_model("carded")
    bare = entry.card()
    assert bare.text is None and bare.figures == ()  # no card: nothing, and no error
    (folder / "README.md").write_text("# carded v1\n\nTrained on my cells.\n", encoding="utf-8")
    (folder / "report").mkdir()
    (folder / "report" / "curves.png").write_bytes(b"png")
    card = registry.read_card(folder)
    assert card.text.startswith("# carded v1")
    assert card.figures == (("Training curves", folder / "report" / "curves.png"),)
