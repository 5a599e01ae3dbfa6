"""Find models: the bundled ones and the user's own.

Bundled models ship inside the package (``napari_hpa/bundled_models/``, the data-only
package ``napari_hpa.bundled_models``); the user's models live in
``$NAPARI_HPA_HOME/models`` or the platform's user data folder. A model is
named ``name`` (the newest version) or ``name@version``, or given by its path.
A new version is saved with :func:`save_new_version`, which claims the next free
version number safely when several runs save the same name at once.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from platformdirs import user_data_dir

from .checkpoint import (
    META_FILE,
    CheckpointError,
    ModelSpec,
    VersionExistsError,
    checked_name,
    clean_partial_versions,
    prepare_models_dir,
    read_spec,
    save_model,
)
from .names import printable

Source = Literal["bundled", "user", "path"]
HOME_ENV = "NAPARI_HPA_HOME"
#: Preferred default per task: the bundled real-data model comes first.
DEFAULT_MODEL_NAMES = ("hpa28-efficientnet_lite0", "hpa28-synthetic-tiny")
#: A model card longer than this is cut (it is shown in a window, not parsed).
MAX_CARD_BYTES = 1 * 2**20
#: How many times a save takes the next version when other writers claim it first.
_SAVE_ATTEMPTS = 50


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
        if readme.is_file():
            with readme.open("rb") as fh:
                text = fh.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")
        else:
            text = None
    except OSError as exc:
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


def writable_models_dir(root: str | Path | None = None) -> Path:
    """Make the folder a new model goes to and check it can be written; return it.

    ``root`` None is the user's models folder. Raises :class:`CheckpointError`
    in one line (``$NAPARI_HPA_HOME`` pointing to a file, a read-only or full
    folder) so that a training run can say so before it starts.
    """
    if root is None or str(root) == "":
        home = user_home()
        if home.exists() and not home.is_dir():
            raise CheckpointError(
                f"{home}: ${HOME_ENV} points to a file, not a folder; "
                "set it to a folder (or unset it)"
            )
        root = user_models_dir()
    return prepare_models_dir(root)


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
        return sorted(c for c in folder.iterdir() if _is_dir(c))
    except OSError as exc:
        _report(f"{folder}: cannot list this folder ({exc.strerror or exc})", problems)
        return []


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name too long, or no permission to look
        return False


def _has_meta(folder: Path) -> bool:
    try:
        return (folder / META_FILE).is_file()
    except OSError:
        return False


def _report(message: str, problems: list[str] | None) -> None:
    message = printable(message, limit=400)
    if problems is None:
        warnings.warn(f"skipping model folder: {message}", stacklevel=4)
    else:
        problems.append(message)


def _scan(root: Path, source: Source, problems: list[str] | None = None) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    if not _is_dir(root):
        return entries
    if source == "user":  # what killed writers left; never a live writer's folder
        clean_partial_versions(root)
    candidates = [root] if _has_meta(root) else []
    for child in _subfolders(root, problems):
        if child.name.startswith((".", "_")):
            continue
        if _has_meta(child):
            candidates.append(child)
        else:
            candidates += [g for g in _subfolders(child, problems) if _has_meta(g)]
    for folder in candidates:
        try:
            entries.append(ModelEntry(read_spec(folder), folder, source))
        except CheckpointError as exc:
            _report(str(exc), problems)
        except Exception as exc:  # noqa: BLE001 - one bad folder must never hide the others
            _report(f"{folder / META_FILE}: cannot be read ({type(exc).__name__})", problems)
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

    ``None`` gives the default model (the bundled HPA model). Broken model
    folders are skipped silently here (``napari-hpa models`` lists them); when
    the model is not found, the message says how many were skipped and why.
    """
    if ref is None or str(ref) == "":
        return default_model()
    path = Path(str(ref)).expanduser()
    if _has_meta(path):
        return ModelEntry(read_spec(path), path, "path")
    name, _, version = str(ref).partition("@")
    problems: list[str] = []
    models = list_models(problems=problems)
    matches = [e for e in models if e.name == name]
    if not matches:
        known = ", ".join(sorted({e.name for e in models})) or "none"
        skipped = (
            f"; {len(problems)} broken model folder(s) skipped, e.g. {problems[0]}"
            if problems
            else ""
        )
        raise LookupError(
            printable(f"no model named {name!r} (available: {known}){skipped}", limit=600)
        )
    if version:
        try:
            wanted = int(version.lstrip("v"))
        except ValueError:
            raise LookupError(printable(f"bad model version {version!r} in {ref!r}")) from None
        for entry in matches:
            if entry.version == wanted:
                return entry
        have = ", ".join(str(e.version) for e in matches)
        raise LookupError(f"model {name!r} has no version {wanted} (versions: {have})")
    return max(matches, key=lambda e: e.version)


def default_model() -> ModelEntry:
    """Return the model a new user gets: the bundled HPA model, else any model."""
    models = list_models(problems=[])
    for name in DEFAULT_MODEL_NAMES:
        named = [e for e in models if e.name == name]
        if named:
            return max(named, key=lambda e: e.version)
    if not models:
        raise LookupError(
            f"no models found (bundled: {bundled_models_dir()}, user: {user_models_dir()})"
        )
    return models[0]


def next_version(name: str, root: str | Path | None = None) -> int:
    """Return the version number a new model called ``name`` gets (in ``root`` too, if given).

    Versions of ``name`` that the registry lists count, and so does any
    ``<name>-v<N>`` folder in ``root``, even one that does not load (its number
    stays taken). The exact name is compared, never a pattern.
    """
    extra = (Path(root),) if root is not None else ()
    versions = [e.version for e in list_models(extra, problems=[]) if e.name == name]
    prefix = f"{name}-v"
    for folder in (Path(root),) if root is not None else ():
        try:
            names = [p.name for p in folder.iterdir()]
        except OSError:
            names = []
        versions += [int(n[len(prefix) :]) for n in names if _version_suffix(n, prefix)]
    return max(versions, default=0) + 1


def _version_suffix(folder_name: str, prefix: str) -> bool:
    rest = folder_name[len(prefix) :]
    return folder_name.startswith(prefix) and rest.isascii() and rest.isdigit() and len(rest) < 10


def save_new_version(
    net: torch.nn.Module,
    spec: ModelSpec,
    root: str | Path | None = None,
    **save_kwargs: Any,
) -> Path:
    """Save ``net`` as the next free version of ``spec.name`` in ``root``; return its folder.

    Safe when several processes save the same name at once: the version folder
    is claimed by the rename itself (:func:`~.checkpoint.save_model`), and a
    writer that loses the race takes the next number and writes again, so a
    finished model is never thrown away. ``root`` None is the user's models
    folder; ``save_kwargs`` go to ``save_model`` (``half``, ``write_extra``), and
    ``write_extra`` runs again for each attempt (the card names the version).
    ``spec.version`` and ``spec.created`` are set here.
    """
    checked_name(spec.name)
    folder = writable_models_dir(root)
    for _ in range(_SAVE_ATTEMPTS):
        spec.version = next_version(spec.name, folder)
        spec.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            return save_model(net, spec, folder, **save_kwargs)
        except VersionExistsError:
            continue
    raise CheckpointError(
        f"{folder}: could not claim a new version of {spec.name!r} "
        f"({_SAVE_ATTEMPTS} other writers were faster)"
    )
