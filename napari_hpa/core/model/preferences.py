"""The user's settings file, ``user_home()/settings.json`` (preferred model, ...).

It also holds the one "current model" rule, :func:`current_model`, that the napari
docks and every ``napari-hpa`` command follow: a model named explicitly, else the
one chosen in napari with "Use this model" / "Roll back", else the default model.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic import write_text
from . import registry
from .checkpoint import CheckpointError

SETTINGS_FILE = "settings.json"
PREFERRED_MODEL = "preferred_model"
#: A settings file holds a few names; anything this large is not one.
MAX_SETTINGS_BYTES = 2**20


class SettingsError(OSError):
    """The settings file cannot be written; the message names it and says why."""


#: Why a model is the current one (printed by the CLI as ``using <id> (<reason>)``).
Reason = Literal["given with --model", "chosen in napari", "newest", "bundled default"]


def settings_path() -> Path:
    """Where the settings live: ``user_home()/settings.json``."""
    return registry.user_home() / SETTINGS_FILE


def load_settings() -> dict[str, Any]:
    """Return the settings, or an empty dict when the file is missing or unreadable.

    A broken settings file (not JSON, nested too deeply, huge) must never stop
    napari or a command from starting.
    """
    path = settings_path()
    try:
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or UTF-8
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the settings (a None value removes the key); write atomically.

    Raises :class:`SettingsError` (an OSError) in one line when the file cannot
    be written: the previous settings are kept whole (``core/atomic``).
    """
    data = load_settings()
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = settings_path()
    home = path.parent
    if home.exists() and not home.is_dir():
        raise SettingsError(
            f"{home}: ${registry.HOME_ENV} points to a file, not a folder; "
            "the settings cannot be saved there"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(data, indent=2))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot save the settings ({exc.strerror or exc})") from None
    return data


def preferred_model(task: str | None = None) -> str | None:
    """Return the model chosen with "Use this model" (``name@version``), per task if given."""
    data = load_settings()
    if task is not None:
        per_task = data.get(f"{PREFERRED_MODEL}_by_task", {})
        if isinstance(per_task, dict) and isinstance(per_task.get(task), str):
            return per_task[task]
    value = data.get(PREFERRED_MODEL)
    return value if isinstance(value, str) else None


def set_preferred_model(model_id: str | None, task: str | None = None) -> None:
    """Remember ``model_id`` as the preferred model (None forgets it)."""
    changes: dict[str, Any] = {PREFERRED_MODEL: model_id}
    if task is not None:
        per_task = load_settings().get(f"{PREFERRED_MODEL}_by_task", {})
        per_task = dict(per_task) if isinstance(per_task, dict) else {}
        if model_id is None:
            per_task.pop(task, None)
        else:
            per_task[task] = model_id
        changes[f"{PREFERRED_MODEL}_by_task"] = per_task
    save_settings(changes)


def resolve_preferred(task: str | None = None) -> registry.ModelEntry | None:
    """Return the preferred model's registry entry, or None if unset or gone."""
    ref = preferred_model(task)
    if not ref:
        return None
    with contextlib.suppress(LookupError, ValueError):
        return registry.resolve_model(ref)
    return None


@dataclass(frozen=True)
class ModelChoice:
    """The current model and why it is the one.

    The CLI prints :meth:`describe`, so that a user who pressed "Roll back" in napari
    sees that the terminal now uses the same version (or why it does not).
    """

    entry: registry.ModelEntry
    reason: Reason
    #: Why the model chosen in napari was not used ('' when nothing went wrong).
    note: str = ""

    def describe(self) -> str:
        """Return ``using <name@version> (<reason>)``."""
        return f"using {self.entry.id} ({self.reason})"


def current_model(ref: str | Path | None = None, task: str | None = None) -> ModelChoice:
    """Return the model to use, by the one rule that the napari docks and the CLI share.

    Parameters
    ----------
    ref
        A model given explicitly (``name``, ``name@version`` or a folder): it always
        wins. None or '' follow the user's choice.
    task
        The task whose "Use this model" choice applies (None: the last choice made).

    Returns
    -------
    ModelChoice
        ``ref``'s model; else the model chosen in napari, if it still exists; else
        the default model (``registry.default_model``: "bundled default" when it is
        the bundled one, "newest" when a newer version of it was trained here).

    Raises
    ------
    LookupError, CheckpointError
        For an unknown or broken ``ref``, or when there is no model at all.
    """
    if ref is not None and str(ref) != "":
        return ModelChoice(registry.resolve_model(ref), "given with --model")
    note = ""
    wanted = preferred_model(task)
    if wanted:
        try:
            return ModelChoice(registry.resolve_model(wanted), "chosen in napari")
        except (LookupError, CheckpointError, ValueError):
            note = f"the model chosen in napari, {wanted}, is no longer there"
    entry = registry.default_model()
    return ModelChoice(entry, "bundled default" if entry.source == "bundled" else "newest", note)


def model_to_use(task: str | None = None) -> registry.ModelEntry:
    """Return the model a widget starts with: :func:`current_model` without an explicit model.

    Raises LookupError when there is no model at all.
    """
    return current_model(None, task).entry
