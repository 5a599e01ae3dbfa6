"""What the Retrain widget finds around it: images, database, other docks, a model.

The viewer's images, the annotations database, the other napari-hpa docks of
the viewer (from its session) and a model for the task the corrections are for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import layers as L
from ...core.labels.store import default_db_path
from ...core.model import registry
from .._shared.session import session_for

if TYPE_CHECKING:
    import napari


def image_sources(viewer: napari.Viewer) -> list[str]:
    """Image sources of the viewer's layers, the selected layer first."""
    layers = list(viewer.layers)
    active = viewer.layers.selection.active
    if active in layers:
        layers.remove(active)
        layers.insert(0, active)
    out: list[str] = []
    for layer in layers:
        source = L.meta(layer).get("source")
        if not source:
            path = getattr(getattr(layer, "source", None), "path", None)
            source = str(path) if path else None
        if source and not str(source).startswith("layer:") and source not in out:
            out.append(str(source))
    return out


def find_db(viewer: napari.Viewer) -> Path | None:
    """Find the annotations database for the viewer's images.

    The Annotate widget's, else the one next to the current image, else the one in
    the user folder (None if none exists).
    """
    for widget in find_widgets(viewer, "AnnotateWidget"):
        store = getattr(widget, "store", None)
        if store is not None and getattr(store, "path", None):
            return Path(store.path)
    for source in image_sources(viewer):
        path = default_db_path(source)
        if path.is_file():
            return path
    fallback = registry.user_home() / "annotations.sqlite"
    return fallback if fallback.is_file() else None


def find_widgets(viewer: napari.Viewer, class_name: str) -> list[Any]:
    """List the open napari-hpa docks of the viewer with this class name.

    They come from the viewer's session: napari's window keeps its docks in
    private attributes.
    """
    return session_for(viewer).docks(class_name)


def model_for_tasks(
    entries: list[registry.ModelEntry], tasks: list[str]
) -> registry.ModelEntry | None:
    """Return the newest user model (else bundled model) of one of ``tasks``."""
    fitting = [e for e in entries if e.spec.task.name in tasks]
    if not fitting:
        return None
    return max(fitting, key=lambda e: (e.source == "user", e.spec.created, e.version))
