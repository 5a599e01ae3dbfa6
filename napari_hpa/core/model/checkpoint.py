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

import errno
import json
import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import TMP_PREFIX
from ..tasks import Task
from .architectures.base import (
    MAX_CLASSES,
    MAX_IN_CHANNELS,
    ClassifierNet,
    bounded_int,
    build_model,
)
from .folders import (
    CheckpointError,
    VersionExistsError,
    check_free_space,
    clean_partial_versions,
    fsync_dir,
    prepare_models_dir,
    remove_tree,
    writer_tag,
)
from .names import check_model_name, model_name_problem, printable
from .sanity import (
    MAX_JSON_DEPTH,
    MAX_META_BYTES,
    check_not_pickle,
    missing_weights_hint,
    read_meta,
    weights_problem,
)
from .views import VIEW_MODES

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
CARD_FILE = "README.md"
_REQUIRED_FIELDS = ("schema_version", "name", "version", "arch", "task", "input")

#: Bounds on what ``model.json`` sizes, checked before anything is allocated: the tile
#: size and the resize target (the file's own size and nesting: :mod:`.sanity`).
MIN_TILE, MAX_TILE = 8, 4096
MAX_FIT = 16384
MAX_VERSION = 10**9
#: Re-exported: the model format's errors and folder checks are what callers of it catch and use.
#: So are the load-time checks' names that lived here before :mod:`.sanity` held them.
__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_META_BYTES",
    "CheckpointError",
    "VersionExistsError",
    "check_free_space",
    "clean_partial_versions",
    "prepare_models_dir",
    "weights_problem",
]


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
    fills the tile as the cells the model was trained on did. ``views`` is what the
    Predictor averages per tile (:mod:`~napari_hpa.core.model.views`): ``"none"``, the
    tile as it is; ``"flip4"``, its 4 flips; ``"d4"``, its 8 rotations and flips.
    A cell's orientation means nothing, so the averaged answer is steadier.
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
    views: str = "none"

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not 1 <= n <= MAX_IN_CHANNELS:
            raise ValueError(f"input.channels must name 1 to {MAX_IN_CHANNELS} channels, not {n}")
        self.size = bounded_int("input.size", self.size, MIN_TILE, MAX_TILE)
        if self.fit is not None:
            self.fit = bounded_int("input.fit", self.fit, MIN_TILE, MAX_FIT)
        if not self.mean:
            self.mean = [0.0] * n
        if not self.std:
            self.std = [1.0] * n
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError("input mean/std must have one value per channel")
        for what, values in (("mean", self.mean), ("std", self.std)):
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    raise ValueError(f"input.{what}[{i}] is {value}: it must be a finite number")
        for i, value in enumerate(self.std):
            if value <= 0:
                raise ValueError(
                    f"input.std[{i}] ({self.channels[i]}) is {value}: inputs are divided by "
                    "it, so it must be positive (0 gives NaN probabilities)"
                )
        if self.normalize not in ("none", "percentile"):
            raise ValueError(f"unknown normalize mode {self.normalize!r}")
        if self.cell_fit not in ("stretch", "square"):
            raise ValueError(f"unknown cell_fit {self.cell_fit!r}")
        if self.views not in VIEW_MODES:
            raise ValueError(f"unknown input.views {self.views!r} (one of {', '.join(VIEW_MODES)})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Read ``model.json``'s ``input``; a field an older model lacks takes its default."""
        return cls(
            channels=[str(c) for c in data["channels"]],
            size=data.get("size", 224),
            fit=data.get("fit"),
            optional_channels=[str(c) for c in data.get("optional_channels", [])],
            mean=[float(v) for v in data.get("mean", [])],
            std=[float(v) for v in data.get("std", [])],
            normalize=str(data.get("normalize", "none")),
            invert=bool(data.get("invert", False)),
            pad_square=bool(data.get("pad_square", False)),
            cell_fit=str(data.get("cell_fit", "stretch")),
            views=str(data.get("views", "none")),
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
        check_model_name(self.name)
        self.version = bounded_int("version", self.version, 0, MAX_VERSION)
        if self.task.num_classes > MAX_CLASSES:
            raise ValueError(
                f"the task has {self.task.num_classes} classes (at most {MAX_CLASSES})"
            )
        if not self.thresholds:
            self.thresholds = [0.5] * self.task.num_classes
        if len(self.thresholds) != self.task.num_classes:
            raise ValueError("thresholds must have one value per class")
        if not all(math.isfinite(t) for t in self.thresholds):
            raise ValueError("thresholds must be finite numbers")
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
            name=data["name"],
            version=data["version"],
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
    """Read and validate ``model.json`` only (cheap: for listing models).

    The file may come from anywhere: its size and nesting are bounded before it is
    parsed further, and every way it can be wrong is a :class:`CheckpointError`
    naming it, so one bad folder cannot break a listing.
    """
    meta = Path(folder) / META_FILE
    data = read_meta(meta)
    try:
        return ModelSpec.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{meta}: {printable(exc, limit=300)}") from None


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder. Never unpickles: weights must be safetensors.

    The network is built (its sizes bounded, :func:`build_model`) before the
    weights are read; weights holding NaN/Inf are refused (:func:`weights_problem`).
    """
    folder = Path(folder)
    spec = read_spec(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing{missing_weights_hint(folder)}")
    check_not_pickle(weights)
    try:
        net = build_model(
            spec.arch, len(spec.input.channels), spec.task.num_classes, **spec.arch_kwargs
        )
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{folder / META_FILE}: cannot build the network ({printable(exc, limit=300)})"
        ) from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    problem = weights_problem(state)
    if problem:
        raise CheckpointError(f"{weights}: {problem}; the model cannot give meaningful outputs")
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


def checked_name(name: str) -> str:
    """Return ``name`` if it can name a model (:func:`~.names.check_model_name`).

    Raises :class:`CheckpointError`, so that every caller of the model format
    that catches its errors also catches a bad name.
    """
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def version_folder_name(spec: ModelSpec) -> str:
    """Return the folder name of a model version: ``<name>-v<version>``."""
    return f"{spec.name}-v{spec.version}"


#: ``.tmp-<folder>~<host>~<pid>~<start ticks>~<random>``: a version being written.
_TEMP_VERSION = re.compile(
    re.escape(TMP_PREFIX) + r"(?P<folder>.+)~(?P<host>[^~]+)~(?P<pid>\d+)~(?P<ticks>\d+)~[0-9a-f]+"
)


def temp_version_path(root: Path, folder_name: str) -> Path:
    """Return a new temporary folder for version ``folder_name``; its name says who writes it."""
    return root / f"{TMP_PREFIX}{folder_name}~{writer_tag()}~{uuid.uuid4().hex[:8]}"


def partial_versions(
    root: str | Path, name: str, pid: int, start_ticks: int | None = None
) -> list[Path]:
    """Return the temporary version folders of model ``name`` that process ``pid`` wrote.

    Only folders of ``<name>-v<N>`` (not another model whose name starts alike,
    ``<name>-vision``), written on this machine by ``pid`` (started at
    ``start_ticks``, when both it and the folder know: a reused pid is another
    process). For a cancelled job to remove its own trainer's leftovers and never
    another run's save in progress.
    """
    host = writer_tag().split("~", 1)[0]
    own = re.compile(re.escape(name) + r"-v\d+")
    found = []
    try:
        entries = sorted(Path(root).iterdir())
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_VERSION.fullmatch(entry.name)
        if m is None or not own.fullmatch(m["folder"]) or m["host"] != host:
            continue
        ticks = int(m["ticks"])
        if int(m["pid"]) == pid and not (start_ticks and ticks and ticks != start_ticks):
            found.append(entry)
    return found


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

    The temporary folder's name says which process writes it, so that
    :func:`clean_partial_versions` (run here first) removes what killed writers
    left and never what a live one is writing.

    Raises
    ------
    VersionExistsError
        When the version folder exists, or appears while writing (another writer
        claimed it); nothing is written then. To take the next free version
        instead, use :func:`napari_hpa.core.model.registry.save_new_version`.
    CheckpointError
        For a bad name, weights that hold NaN/Inf, or a folder that cannot be
        written (full disk, read-only), in one line.
    """
    checked_name(spec.name)
    if folder_name is not None and model_name_problem(folder_name):
        raise CheckpointError(
            f"bad folder name '{printable(folder_name)}': {model_name_problem(folder_name)}"
        )
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    problem = weights_problem(state)
    if problem:
        raise CheckpointError(f"{spec.id}: {problem}; refusing to save a model that cannot predict")
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        if weights_problem(state):
            raise CheckpointError(f"{spec.id}: weights too large for float16; save without half")
    root = prepare_models_dir(root)
    clean_partial_versions(root)
    final = root / (folder_name or version_folder_name(spec))
    if final.exists():
        raise VersionExistsError(
            f"{final}: this model version already exists; versions are immutable"
        )
    tmp = temp_version_path(root, final.name)
    try:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "model": spec.id})
        (tmp / META_FILE).write_text(json.dumps(spec.to_dict(), indent=2), encoding="utf-8")
        if write_extra is not None:
            write_extra(tmp)
        _fsync_tree(tmp)
        _make_readable(tmp)
        os.rename(tmp, final)
    except (OSError, SafetensorError) as exc:
        remove_tree(tmp)
        code = getattr(exc, "errno", None)
        if code in (errno.EEXIST, errno.ENOTEMPTY) and final.exists():
            raise VersionExistsError(f"{final}: another writer saved this version first") from None
        reason = getattr(exc, "strerror", None) or printable(exc, limit=200)
        raise CheckpointError(
            f"{root}: cannot save model {spec.id} here ({reason}); nothing was written"
        ) from None
    except BaseException:
        remove_tree(tmp)
        raise
    fsync_dir(root)
    return final


def model_bytes(net: torch.nn.Module, half: bool = False) -> int:
    """Return about how many bytes a saved ``net`` takes (weights, model.json, report)."""
    n = sum(
        t.numel() * (2 if half and t.is_floating_point() else t.element_size())
        for t in net.state_dict().values()
    )
    return n + 2**20


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
