"""Add a model from a file: a ``.pt`` state dict, a napari-hpa model folder, a bioimage.io package.

Nothing is unpickled: a state dict is read with ``torch.load(weights_only=True)``
(:func:`~.checkpoint.import_torch_weights`), a model folder's weights are safetensors
(:func:`~.checkpoint.load_model`), and a bioimage.io package goes through
:func:`~.bioimage_io.import_package`. Every model is saved as the next version of its
name with :func:`~.registry.save_new_version`. ``napari-hpa import-weights`` and the
Predict dock's "Add model…" both call these functions.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .architectures.base import build_model
from .checkpoint import (
    CARD_FILE,
    META_FILE,
    CheckpointError,
    ModelSpec,
    import_torch_weights,
    load_model,
    read_spec,
    save_model,
)
from .names import check_model_name, printable
from .registry import save_new_version, writable_models_dir

#: A few mismatched keys are enough to see the problem; all of them would flood a line.
SHOWN_KEYS = 4
#: The suffixes of a PyTorch state dict file.
STATE_DICT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class AddedModel:
    """A model :func:`add_model` saved: its folder, its spec, and notes about the import."""

    path: Path
    spec: ModelSpec
    notes: tuple[str, ...] = ()


def weights_refusal(path: Path, exc: Exception) -> str:
    """Return one line for a file ``torch.load(weights_only=True)`` refused, naming what it held.

    Parameters
    ----------
    path
        The refused file.
    exc
        What :func:`~.checkpoint.import_torch_weights` raised.
    """
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(
        r"[Uu]nsupported (?:global|class)[:\s]+([\w.]+)", text
    )
    what = f" (it names {found.group(1)}, which unpickling would call)" if found else ""
    return (
        f"{path}: refused: not a plain state dict of tensors{what}. napari-hpa reads .pt/.pth "
        "files only with torch.load(weights_only=True) and never runs code from them; save "
        "the weights with torch.save(model.state_dict(), FILE) and import that"
    )


def fit_problem(net: torch.nn.Module, state: dict[str, Any], arch: str) -> str | None:
    """Return None when ``state`` fits ``net`` exactly, else one line naming the mismatches.

    Parameters
    ----------
    net
        The network the weights are for.
    state
        The state dict read from the file.
    arch
        The architecture's name, for the message.
    """
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
            parts.append(f"{label}: {', '.join(items[:SHOWN_KEYS])}{more}")
    return f"the weights do not fit {arch}: " + "; ".join(parts)


def load_fitted(net: torch.nn.Module, state: dict[str, Any]) -> torch.nn.Module:
    """Load a state dict that :func:`fit_problem` accepted, in the network's own dtypes."""
    own = net.state_dict()
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return net


def import_state_dict(
    path: str | Path,
    spec: ModelSpec,
    root: str | Path | None = None,
    *,
    strip_prefix: str = "",
    half: bool = False,
    keep_version: bool = False,
    fit_hint: str = "",
) -> Path:
    """Save the state dict in ``path`` as the model ``spec`` describes; return its folder.

    Parameters
    ----------
    path
        A ``.pt``/``.pth`` file holding a state dict of tensors (read with
        ``weights_only=True``; anything else is refused before it can run).
    spec
        The model's spec: its architecture, task and input.
    root
        The models folder (default: the user's).
    strip_prefix
        Removed from the start of every key (e.g. ``module.``).
    half
        Store float16 weights.
    keep_version
        Save as ``spec.version`` (refused if it exists) instead of the next free version.
    fit_hint
        Added to the message when the weights do not fit (where the settings came from).

    Raises
    ------
    CheckpointError
        In one line naming the file: a network that cannot be built, a refused pickle,
        weights that do not fit the architecture, a folder that cannot be written.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    n = len(spec.input.channels)
    try:
        net = build_model(spec.arch, n, spec.task.num_classes, **spec.arch_kwargs)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(str(exc)) from None
    try:
        state = import_torch_weights(path)  # torch.load(weights_only=True): no code runs
    except CheckpointError as exc:
        raise CheckpointError(weights_refusal(path, exc)) from None
    if strip_prefix:
        p = strip_prefix
        state = {k[len(p) :] if k.startswith(p) else k: v for k, v in state.items()}
    problem = fit_problem(net, state, spec.arch)
    if problem:
        raise CheckpointError(f"{path}: {problem}{fit_hint}")
    load_fitted(net, state)
    if keep_version:
        return save_model(net.eval(), spec, writable_models_dir(root), half=half)
    return save_new_version(net.eval(), spec, root, half=half)


def state_dict_like(path: str | Path, like: ModelSpec, root: str | Path | None = None) -> Path:
    """Import a state dict as a model of ``like``'s architecture, task and input.

    The model is named after the file (``mine.pt`` becomes ``mine@N``). For another
    architecture or task, ``napari-hpa import-weights`` takes them as options.

    Raises
    ------
    CheckpointError
        As :func:`import_state_dict`, or for a file name that cannot name a model.
    """
    path = Path(path).expanduser()
    try:
        name = check_model_name(path.stem)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc} (the model is named after the file)") from None
    spec = ModelSpec(
        name=name,
        version=0,
        arch=like.arch,
        task=like.task,
        input=like.input,
        arch_kwargs=dict(like.arch_kwargs),
        description=f"imported from {printable(path.name, 100)} as {like.arch} for {like.id}",
        training={"imported_from": str(path.resolve()), "settings_of": like.id},
    )
    hint = (
        f" (read as {like.arch} with the task and channels of {like.id}, the chosen model; "
        "for others use napari-hpa import-weights)"
    )
    return import_state_dict(path, spec, root, fit_hint=hint)


def copy_model_folder(folder: str | Path, root: str | Path | None = None) -> AddedModel:
    """Save the napari-hpa model in ``folder`` as the next version of its name.

    The weights are loaded and checked (safetensors only, never a pickle); the model
    card and ``report/`` figures come along.

    Raises
    ------
    CheckpointError
        For a folder without ``model.json`` or with weights that do not load, in one line.
    """
    folder = Path(folder).expanduser()
    if not (folder / META_FILE).is_file():
        raise CheckpointError(
            f"{folder}: not a napari-hpa model folder (no {META_FILE}) "
            "nor a bioimage.io package (no rdf.yaml)"
        )
    loaded = load_model(folder)
    spec = loaded.spec
    spec.training = {**spec.training, "imported_from": str(folder.resolve())}

    def extra(tmp: Path) -> None:
        if (folder / CARD_FILE).is_file():
            shutil.copyfile(folder / CARD_FILE, tmp / CARD_FILE)
        if (folder / "report").is_dir():
            shutil.copytree(folder / "report", tmp / "report", symlinks=False)

    path = save_new_version(loaded.net, spec, root, write_extra=extra)
    return AddedModel(path, spec)


def add_model(
    source: str | Path, root: str | Path | None = None, *, like: ModelSpec | None = None
) -> AddedModel:
    """Add the model at ``source`` as a new version in ``root`` (default: the user's models).

    Parameters
    ----------
    source
        A bioimage.io package (``.zip``, or a folder with ``rdf.yaml``), a napari-hpa model
        folder (with ``model.json``), or a ``.pt``/``.pth`` state dict.
    root
        The models folder.
    like
        For a state dict: the model whose architecture, task and input it has.

    Raises
    ------
    CheckpointError
        For anything refused, in one line naming the file and the reason
        (:class:`~.bioimage_io.BioimageioError` for a package).
    """
    from .bioimage_io import import_package
    from .bioimage_io.importing import DESCRIPTION_FILES

    source = Path(source).expanduser()
    if not source.exists():
        raise CheckpointError(f"{source}: no such file or folder")
    if source.is_dir():
        if any((source / f).is_file() for f in DESCRIPTION_FILES):
            result = import_package(source, None, root)
            return AddedModel(result.path, result.spec, result.notes)
        return copy_model_folder(source, root)
    suffix = source.suffix.lower()
    if suffix == ".zip":
        result = import_package(source, None, root)
        return AddedModel(result.path, result.spec, result.notes)
    if suffix in STATE_DICT_SUFFIXES:
        if like is None:
            raise CheckpointError(f"{source}: a state dict needs a model whose settings it has")
        path = state_dict_like(source, like, root)
        return AddedModel(path, read_spec(path))
    raise CheckpointError(
        f"{source}: unsupported file; add a bioimage.io package (.zip), a napari-hpa model "
        "folder or a .pt/.pth state dict"
    )
