"""A Retrain worker that ends after napari deleted the dock touches nothing.

Seen in CI: a background refresh finished after the viewer's teardown had deleted the
dock, and its delivery raised "wrapped C/C++ object of type RetrainWidget has been
deleted" inside Qt's event loop. The dock is added as the Plugins menu adds it.
"""

from __future__ import annotations

import threading

from conftest import GUI_TEST

from napari_hpa.core.model import registry

pytestmark = GUI_TEST


def test_a_worker_ending_after_the_dock_is_deleted_is_ignored(
    make_napari_viewer, qtbot, monkeypatch
) -> None:
    viewer = make_napari_viewer()
    dock, retrain = viewer.window.add_plugin_dock_widget("napari-hpa", "Retrain")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = registry.list_models

    def slow_listing(*args, **kwargs):
        started.set()
        release.wait(30)
        try:
            return real(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(registry, "list_models", slow_listing)
    retrain.refresh_models_async()
    assert started.wait(30)
    deleted = threading.Event()
    retrain.destroyed.connect(deleted.set)
    viewer.window.remove_dock_widget(dock)
    retrain.deleteLater()  # what the viewer's teardown does to its docks
    qtbot.waitUntil(deleted.is_set, timeout=10_000)
    release.set()
    assert finished.wait(30)
    qtbot.wait(500)  # the worker's result is delivered here: it must not raise
