"""The user's settings file, ``user_home()/settings.json`` (preferred model, ...)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from . import registry

SETTINGS_FILE = "settings.json"
PREFERRED_MODEL = "preferred_model"


def settings_path() -> Path:
    return registry.user_home() / SETTINGS_FILE


def load_settings() -> dict[str, Any]:
    """The settings (an empty dict when the file is missing or unreadable)."""
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the settings (a None value removes the key); write atomically."""
    data = load_settings()
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return data


def preferred_model(task: str | None = None) -> str | None:
    """The model the user chose with "Use this model" (``name@version``), per task if given."""
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
    """The preferred model's registry entry, or None if unset or gone."""
    ref = preferred_model(task)
    if not ref:
        return None
    with contextlib.suppress(LookupError, ValueError):
        return registry.resolve_model(ref)
    return None


def model_to_use(task: str | None = None) -> registry.ModelEntry:
    """The model a widget starts with: the one chosen with "Use this model", if it still
    exists, else the default model. Raises LookupError when there is no model at all."""
    return resolve_preferred(task) or registry.default_model()
