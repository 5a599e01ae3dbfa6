"""The model format: a folder with ``model.safetensors`` and ``model.json``.

Why this format: safetensors holds only tensors, so opening a model someone
sent you can never execute code (a pickle can). ``model.json`` carries all that
is needed to rebuild and use the network (architecture, task, channels,
normalisation, thresholds) plus its provenance (metrics, parent, data
fingerprint), so a model still loads and explains itself years later.

Versions are immutable: a new version is written to a temporary folder next to
its final place and renamed into place, so a crash leaves either the whole
version or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..tasks import Task
from .architectures.base import ClassifierNet, build_model

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
CARD_FILE = "README.md"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
_REQUIRED_FIELDS = ("schema_version", "name", "version", "arch", "task", "input")


class CheckpointError(ValueError):
    """A model folder that cannot be used; the message names the file and the problem."""


@dataclass
class InputSpec:
    """How an image becomes the network's input tensor.

    ``size`` is the network's tile size in pixels. ``fit`` is the size the whole
    image is resized to (its longer side) before it is cut into ``size`` tiles;
    ``None`` means the whole image is resized to one ``size`` tile.
    ``normalize`` is ``"none"`` (values stay in [0, 1]) or ``"percentile"``
    (per-channel 1st-99.8th percentile stretch, for images of any brightness).
    ``mean``/``std`` are applied after that, per channel. ``invert`` flips
    intensities (1 - x) first, for dark objects on a bright background;
    ``pad_square`` pads the image to a square with its border's median before
    resizing, so objects keep their aspect ratio. ``cell_fit`` is how one cell's
    crop becomes one tile (:func:`~napari_hpa.core.model.tiles.prepare_cell`):
    ``"stretch"`` resizes the crop to the tile (older models), ``"square"`` pads
    the masked crop to a square with zeros first, so a cell keeps its shape and
    fills the tile as the cells the model was trained on did.
    """

    channels: list[str]
    size: int = 224
    fit: int | None = None
    optional_channels: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    normalize: str = "none"
    invert: bool = False
    pad_square: bool = False
    cell_fit: str = "stretch"

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not self.mean:
            self.mean = [0.0] * n
        if not self.std:
            self.std = [1.0] * n
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError("input mean/std must have one value per channel")
        if self.normalize not in ("none", "percentile"):
            raise ValueError(f"unknown normalize mode {self.normalize!r}")
        if self.cell_fit not in ("stretch", "square"):
            raise ValueError(f"unknown cell_fit {self.cell_fit!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Read ``model.json``'s ``input``; a field an older model lacks takes its default."""
        return cls(
            channels=[str(c) for c in data["channels"]],
            size=int(data.get("size", 224)),
            fit=None if data.get("fit") is None else int(data["fit"]),
            optional_channels=[str(c) for c in data.get("optional_channels", [])],
            mean=[float(v) for v in data.get("mean", [])],
            std=[float(v) for v in data.get("std", [])],
            normalize=str(data.get("normalize", "none")),
            invert=bool(data.get("invert", False)),
            pad_square=bool(data.get("pad_square", False)),
            cell_fit=str(data.get("cell_fit", "stretch")),
        )


@dataclass
class ModelSpec:
    """Everything in ``model.json``."""

    name: str
    version: int
    arch: str
    task: Task
    input: InputSpec
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    parent: str | None = None
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    #: Weight of the image's probabilities in each of its cells' (0: a cell's crop alone).
    #: One protein is stained per HPA image, so its cells mostly share its locations.
    cell_context: float = 0.0

    def __post_init__(self) -> None:
        if not self.thresholds:
            self.thresholds = [0.5] * self.task.num_classes
        if len(self.thresholds) != self.task.num_classes:
            raise ValueError("thresholds must have one value per class")
        if len(self.input.channels) != len(self.task.channels):
            raise ValueError("input.channels and task.channels disagree")
        if not 0.0 <= self.cell_context <= 1.0:
            raise ValueError("cell_context must be between 0 and 1")

    @property
    def id(self) -> str:
        """``name@version``, the identity used by the registry and in result tables."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Return the ``model.json`` content, ``schema_version`` first."""
        out = asdict(self)
        out["task"] = self.task.to_dict()
        out["input"] = asdict(self.input)
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Read ``model.json``; raise ValueError if a field is missing or its schema is newer."""
        missing = [k for k in _REQUIRED_FIELDS if k not in data]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        if int(data["schema_version"]) > SCHEMA_VERSION:
            raise ValueError(
                f"schema version {data['schema_version']} is newer than this napari-hpa "
                f"understands ({SCHEMA_VERSION}); upgrade napari-hpa"
            )
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            arch=str(data["arch"]),
            task=Task.from_dict(data["task"]),
            input=InputSpec.from_dict(data["input"]),
            arch_kwargs=dict(data.get("arch_kwargs", {})),
            thresholds=[float(t) for t in data.get("thresholds", [])],
            metrics=dict(data.get("metrics", {})),
            data_fingerprint=data.get("data_fingerprint"),
            parent=data.get("parent"),
            created=str(data.get("created", "")),
            training=dict(data.get("training", {})),
            description=str(data.get("description", "")),
            schema_version=int(data["schema_version"]),
            cell_context=float(data.get("cell_context", 0.0)),
        )


@dataclass
class LoadedModel:
    """A network in eval mode with its metadata and the folder it came from."""

    spec: ModelSpec
    net: ClassifierNet
    path: Path | None = None

    @property
    def id(self) -> str:
        """``name@version`` of the model's spec."""
        return self.spec.id


def read_spec(folder: str | Path) -> ModelSpec:
    """Read and validate ``model.json`` only (cheap: for listing models)."""
    folder = Path(folder)
    meta = folder / META_FILE
    if not meta.is_file():
        raise CheckpointError(f"{meta}: no model.json in this folder")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{meta}: expected a JSON object")
    try:
        return ModelSpec.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta}: {exc}") from None


def _check_not_pickle(weights: Path) -> None:
    with weights.open("rb") as fh:
        head = fh.read(8)
    # Pickles start with 0x80 (protocol 2+); torch zip archives with "PK".
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{weights}: this is a pickle/torch archive, not safetensors; napari-hpa never "
            "unpickles model files (they can run code). Convert it with "
            "`napari-hpa import-weights` (weights_only) first."
        )


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder. Never unpickles: weights must be safetensors."""
    folder = Path(folder)
    spec = read_spec(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        others = [p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = f" (found {', '.join(others)}: pickled weights are refused)" if others else ""
        raise CheckpointError(f"{weights}: weights file missing{hint}")
    _check_not_pickle(weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from None
    try:
        net = build_model(
            spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
        )
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / META_FILE}: cannot build the network ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise CheckpointError(
            f"{weights}: weights do not fit architecture {spec.arch!r} with "
            f"{len(spec.input.channels)} channels and {spec.task.num_classes} classes ({detail})"
        ) from None
    net.eval().to(device)
    return LoadedModel(spec=spec, net=net, path=folder)


def version_folder_name(spec: ModelSpec) -> str:
    """Return the folder name of a model version: ``<name>-v<version>``."""
    return f"{spec.name}-v{spec.version}"


def save_model(
    net: torch.nn.Module,
    spec: ModelSpec,
    root: str | Path,
    *,
    half: bool = False,
    folder_name: str | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a new model version atomically and return its folder.

    ``write_extra(tmp_folder)`` may add a model card or a ``report/`` folder
    before the rename, so they appear together with the weights or not at all.
    ``half`` stores float weights as float16 (half the file size; they are
    loaded back as float32).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (folder_name or version_folder_name(spec))
    if final.exists():
        raise CheckpointError(f"{final}: this model version already exists; versions are immutable")
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {
            k: (v.detach().half() if half and v.is_floating_point() else v.detach())
            .contiguous()
            .cpu()
            for k, v in net.state_dict().items()
        }
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "model": spec.id})
        (tmp / META_FILE).write_text(json.dumps(spec.to_dict(), indent=2), encoding="utf-8")
        if write_extra is not None:
            write_extra(tmp)
        _fsync_tree(tmp)
        _make_readable(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _make_readable(folder: Path) -> None:
    """World-readable files (0644) so a model can be shared or packaged as it is."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def clean_partial_versions(root: str | Path) -> list[Path]:
    """Remove temporary folders left by a killed writer; returns what was removed."""
    removed = []
    root = Path(root)
    if root.is_dir():
        for tmp in root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def import_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` state dict from elsewhere without running code.

    Uses ``torch.load(weights_only=True)``; anything that is not plain tensors
    is refused with :class:`CheckpointError`.
    """
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise CheckpointError(
            f"{path}: refused: not a plain tensor state dict loadable with "
            f"weights_only=True ({exc})"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: refused: expected a dict of tensors")
    return obj
