"""Find models: the bundled ones and the user's own.

Bundled models ship inside the package (``napari_hpa/bundled_models/``, the data-only
package ``napari_hpa.bundled_models``); the user's models live in
``$NAPARI_HPA_HOME/models`` or the platform's user data folder. A model is
named ``name`` (the newest version) or ``name@version``, or given by its path.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir

from .checkpoint import META_FILE, CheckpointError, ModelSpec, read_spec

Source = Literal["bundled", "user", "path"]
HOME_ENV = "NAPARI_HPA_HOME"
#: Preferred default per task: the bundled real-data model comes first.
DEFAULT_MODEL_NAMES = ("hpa28-efficientnet_lite0", "hpa28-synthetic-tiny")


@dataclass(frozen=True)
class ModelEntry:
    """A model version found on disk (metadata only; load it with ``checkpoint.load_model``)."""

    spec: ModelSpec
    path: Path
    source: Source

    @property
    def id(self) -> str:
        """``name@version``."""
        return self.spec.id

    @property
    def name(self) -> str:
        """The model's name (without the version)."""
        return self.spec.name

    @property
    def version(self) -> int:
        """The model's version number."""
        return self.spec.version

    def card(self) -> ModelCard:
        """Return the model card and report figures saved beside the weights."""
        return read_card(self.path)


#: Report figures a model folder may hold, with the titles they are shown under.
CARD_FIGURES = (("Confusion matrix", "confusion.png"), ("Training curves", "curves.png"))


@dataclass(frozen=True)
class ModelCard:
    """What a model says about itself: ``README.md`` (None if absent) and report figures."""

    text: str | None
    figures: tuple[tuple[str, Path], ...]


def read_card(folder: str | Path) -> ModelCard:
    """Return the card of the model in ``folder``; missing files are left out, never an error.

    An older or hand-made model may have no report.
    """
    folder = Path(folder)
    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8") if readme.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        text = f"(could not read {readme}: {exc})"
    report = folder / "report"
    figures = tuple((title, report / name) for title, name in CARD_FIGURES)
    return ModelCard(text, tuple((t, p) for t, p in figures if p.is_file()))


def user_home() -> Path:
    """Return the user's napari-hpa folder (models, jobs); ``$NAPARI_HPA_HOME`` overrides it."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path(user_data_dir("napari-hpa", appauthor=False))


def user_models_dir() -> Path:
    """Return the folder of the user's own models (``<user_home>/models``)."""
    return user_home() / "models"


def _package_resource_dir(package: str, fallback: str) -> Path:
    """Return the folder of a data-only package (no ``__init__.py``), installed or editable."""
    try:
        spec = importlib.util.find_spec(package)
    except (ModuleNotFoundError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    return Path(__file__).resolve().parents[2] / fallback


def bundled_models_dir() -> Path:
    """Folder of the models shipped with napari-hpa (works installed or from a checkout)."""
    return _package_resource_dir("napari_hpa.bundled_models", "bundled_models")


def sample_data_dir() -> Path:
    """Folder of the generated sample images shipped with napari-hpa."""
    return _package_resource_dir("napari_hpa.bundled_samples", "bundled_samples")


def _subfolders(folder: Path, problems: list[str] | None) -> list[Path]:
    """Sorted sub-folders; an unreadable folder is reported, never fatal to the listing."""
    try:
        return sorted(c for c in folder.iterdir() if c.is_dir())
    except OSError as exc:
        _report(f"{folder}: cannot list this folder ({exc.strerror or exc})", problems)
        return []


def _report(message: str, problems: list[str] | None) -> None:
    if problems is None:
        warnings.warn(f"skipping model folder: {message}", stacklevel=4)
    else:
        problems.append(message)


def _scan(root: Path, source: Source, problems: list[str] | None = None) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    if not root.is_dir():
        return entries
    candidates = [root] if (root / META_FILE).is_file() else []
    for child in _subfolders(root, problems):
        if child.name.startswith((".", "_")):
            continue
        if (child / META_FILE).is_file():
            candidates.append(child)
        else:
            candidates += [g for g in _subfolders(child, problems) if (g / META_FILE).is_file()]
    for folder in candidates:
        try:
            entries.append(ModelEntry(read_spec(folder), folder, source))
        except CheckpointError as exc:
            _report(str(exc), problems)
    return entries


def list_models(
    extra_roots: tuple[Path, ...] = (), problems: list[str] | None = None
) -> list[ModelEntry]:
    """All models, bundled first, each name's versions in ascending order.

    A broken model folder (unreadable ``model.json``) is left out, so one bad
    folder never hides the others; why is appended to ``problems`` if given,
    else issued as a warning.
    """
    entries = _scan(bundled_models_dir(), "bundled", problems)
    entries += _scan(user_models_dir(), "user", problems)
    for root in extra_roots:
        entries += _scan(Path(root), "path", problems)
    seen: dict[tuple[str, int], ModelEntry] = {}
    for entry in entries:
        seen.setdefault((entry.name, entry.version), entry)
    return sorted(seen.values(), key=lambda e: (e.source != "bundled", e.name, e.version))


def resolve_model(ref: str | Path | None = None) -> ModelEntry:
    """Resolve ``name``, ``name@version`` or a folder path to a model.

    ``None`` gives the default model (the bundled HPA model).
    """
    if ref is None or str(ref) == "":
        return default_model()
    path = Path(str(ref)).expanduser()
    if (path / META_FILE).is_file():
        return ModelEntry(read_spec(path), path, "path")
    name, _, version = str(ref).partition("@")
    matches = [e for e in list_models() if e.name == name]
    if not matches:
        known = ", ".join(sorted({e.name for e in list_models()})) or "none"
        raise LookupError(f"no model named {name!r} (available: {known})")
    if version:
        try:
            wanted = int(version.lstrip("v"))
        except ValueError:
            raise LookupError(f"bad model version {version!r} in {ref!r}") from None
        for entry in matches:
            if entry.version == wanted:
                return entry
        have = ", ".join(str(e.version) for e in matches)
        raise LookupError(f"model {name!r} has no version {wanted} (versions: {have})")
    return max(matches, key=lambda e: e.version)


def default_model() -> ModelEntry:
    """Return the model a new user gets: the bundled HPA model, else any model."""
    models = list_models()
    for name in DEFAULT_MODEL_NAMES:
        named = [e for e in models if e.name == name]
        if named:
            return max(named, key=lambda e: e.version)
    if not models:
        raise LookupError(
            f"no models found (bundled: {bundled_models_dir()}, user: {user_models_dir()})"
        )
    return models[0]


def next_version(name: str) -> int:
    """Return the version number a new model called ``name`` gets."""
    versions = [e.version for e in list_models() if e.name == name]
    return max(versions, default=0) + 1
