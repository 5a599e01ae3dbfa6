"""The preferred model ("Use this model") is what every widget starts with."""

from __future__ import annotations

import shutil

from helpers import write_tiny_model

from napari_hpa.core.model import preferences as settings
from napari_hpa.core.model.registry import default_model, user_models_dir


def test_model_to_use_follows_the_preferred_model_then_falls_back() -> None:
    folder = write_tiny_model(user_models_dir(), name="mine", version=3)
    assert settings.model_to_use().id == default_model().id  # nothing chosen yet
    settings.set_preferred_model("mine@3", "hpa28")
    assert settings.model_to_use().id == "mine@3"
    assert settings.model_to_use("hpa28").id == "mine@3"
    shutil.rmtree(folder)  # the chosen model is gone: back to the default, no error
    assert settings.model_to_use().id == default_model().id


def test_predict_widget_starts_with_the_preferred_model(make_napari_viewer) -> None:

    write_tiny_model(user_models_dir(), name="mine", version=2)
    settings.set_preferred_model("mine@2")
    widget = make_napari_viewer().window.add_plugin_dock_widget("napari-hpa", "Predict")[1]
    assert widget.entry is not None and widget.entry.id == "mine@2"
