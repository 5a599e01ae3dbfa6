"""Read what a bioimage.io model package says into napari-hpa's terms: task, input, architecture.

A package napari-hpa exported carries its whole ``model.json`` in ``config.napari-hpa``,
which is used as it is. A classifier from elsewhere is read from its description: the
class names from its (batch, channel) output, multi-label or multi-class from its
``sigmoid`` / ``softmax`` postprocessing, the input channels, tile size and normalisation
from its input and preprocessing. What napari-hpa cannot do as the package says is a
:class:`~.common.BioimageioError` naming the step; what it does only nearly is a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

from ...tasks import make_task
from ..checkpoint import InputSpec, ModelSpec
from ..names import printable
from .common import CONFIG_KEY, BioimageioError
from .processing import HIGH_PERCENTILE, LOW_PERCENTILE

#: The tile size of a package whose input size is not fixed (its smallest at least this).
DEFAULT_TILE = 224


@dataclass
class PackageModel:
    """What a package's description says about the model, in napari-hpa's terms."""

    spec: ModelSpec
    #: The architecture's name, when the package names one napari-hpa has (else matched by
    #: the weights' shapes).
    arch_hint: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def own_spec(descr: Any) -> dict[str, Any] | None:
    """Return the ``model.json`` that napari-hpa embedded in the package's config, or None."""
    extra = getattr(descr.config, "model_extra", None) or {}
    own = extra.get(CONFIG_KEY)
    if isinstance(own, dict) and isinstance(own.get("model"), dict):
        return own["model"]
    return None


def read_package_model(descr: Any, where: str, name: str) -> PackageModel:
    """Return the model ``descr`` (a bioimage.io 0.5 ``ModelDescr``) describes, named ``name``.

    Raises
    ------
    BioimageioError
        When the package is not a classifier napari-hpa can run as the package says.
    """
    embedded = own_spec(descr)
    if embedded is not None:
        try:
            spec = ModelSpec.from_dict({**embedded, "name": name, "version": 0})
        except (ValueError, KeyError, TypeError) as exc:
            raise BioimageioError(
                f"{where}: config.{CONFIG_KEY}.model is not a valid model.json ({exc})"
            ) from None
        return PackageModel(spec, spec.arch, dict(spec.arch_kwargs))
    return _foreign(descr, where, name)


def _foreign(descr: Any, where: str, name: str) -> PackageModel:
    if len(descr.inputs) != 1:
        raise BioimageioError(f"{where}: unsupported: {len(descr.inputs)} inputs (napari-hpa: 1)")
    channels, size = _input_axes(descr.inputs[0], where)
    notes: list[str] = []
    invert, normalize, mean, std = _preprocessing(descr.inputs[0], len(channels), where, notes)
    classes, kind = _classes(descr, where)
    task = make_task(classes, kind, tuple(channels), printable(name, 80))
    spec = ModelSpec(
        name=name,
        version=0,
        arch="unknown",
        task=task,
        input=InputSpec(
            channels=channels, size=size, mean=mean, std=std, normalize=normalize, invert=invert
        ),
        description=printable(descr.description or descr.name, 1000),
    )
    arch = (
        descr.weights.pytorch_state_dict.architecture if descr.weights.pytorch_state_dict else None
    )
    hint = str(getattr(arch, "callable", "") or "").lower() or None
    kwargs = dict(getattr(arch, "kwargs", {}) or {})
    return PackageModel(spec, hint, kwargs, notes)


def _input_axes(tensor: Any, where: str) -> tuple[list[str], int]:
    """(channel names, tile size) of an input with axes batch, channel, y, x."""
    kinds = [a.type for a in tensor.axes]
    if kinds != ["batch", "channel", "space", "space"]:
        raise BioimageioError(
            f"{where}: unsupported input axes {', '.join(kinds)} "
            "(napari-hpa reads 2D images: batch, channel, y, x)"
        )
    channels = [printable(str(c), 80) for c in tensor.axes[1].channel_names]
    sizes = []
    for axis in tensor.axes[2:]:
        size = axis.size
        if isinstance(size, int):
            sizes.append(size)
        elif hasattr(size, "min") and hasattr(size, "step"):  # ParameterizedSize
            n = max(0, -(-(DEFAULT_TILE - size.min) // max(size.step, 1)))
            sizes.append(size.min + n * size.step)
        else:
            raise BioimageioError(
                f"{where}: unsupported: the input's {axis.id} size refers elsewhere"
            )
    if sizes[0] != sizes[1]:
        raise BioimageioError(
            f"{where}: unsupported: a {sizes[0]} x {sizes[1]} input (square only)"
        )
    return channels, sizes[0]


def _preprocessing(
    tensor: Any, n: int, where: str, notes: list[str]
) -> tuple[bool, str, list[float], list[float]]:
    """(invert, normalize, mean, std) of an input's preprocessing, in napari-hpa's order."""
    invert, normalize = False, "none"
    mean, std = [0.0] * n, [1.0] * n
    clipped = False
    for step in tensor.preprocessing:
        op, k = step.id, getattr(step, "kwargs", None)
        k = cast(Any, k)
        if op == "ensure_dtype":
            continue
        if op == "scale_linear" and _is_invert(k) and normalize == "none" and not invert:
            invert = True
        elif op == "scale_range" and normalize == "none":
            axes = [str(a) for a in (k.axes or [])]
            if sorted(axes) != ["x", "y"]:
                raise BioimageioError(
                    f"{where}: unsupported: scale_range over axes {axes or 'all'} "
                    "(napari-hpa stretches each channel of each image: axes y, x)"
                )
            if (k.min_percentile, k.max_percentile) != (LOW_PERCENTILE, HIGH_PERCENTILE):
                raise BioimageioError(
                    f"{where}: unsupported: scale_range {k.min_percentile}-{k.max_percentile} "
                    f"(napari-hpa stretches {LOW_PERCENTILE:g}-{HIGH_PERCENTILE:g} percentiles)"
                )
            normalize = "percentile"
        elif op == "clip" and normalize == "percentile" and (k.min, k.max) == (0.0, 1.0):
            clipped = True
        elif op == "fixed_zero_mean_unit_variance":
            mean, std = _mean_std(k, n)
        else:
            raise BioimageioError(
                f"{where}: unsupported preprocessing step {op!r} here "
                "(napari-hpa runs: invert, 1-99.8 percentile stretch, fixed mean/std)"
            )
    if normalize == "percentile" and not clipped:
        notes.append("napari-hpa clips the percentile stretch to 0..1; the package did not")
    return invert, normalize, mean, std


def _is_invert(k: Any) -> bool:
    gain, offset = getattr(k, "gain", None), getattr(k, "offset", None)
    return gain == -1.0 and offset == 1.0


def _mean_std(k: Any, n: int) -> tuple[list[float], list[float]]:
    mean, std = k.mean, k.std
    means = [float(v) for v in mean] if isinstance(mean, list) else [float(mean)] * n
    stds = [float(v) for v in std] if isinstance(std, list) else [float(std)] * n
    return means, stds


def _classes(descr: Any, where: str) -> tuple[list[str], Literal["multilabel", "multiclass"]]:
    """(class names, kind) from the first output with axes batch, channel."""
    for tensor in descr.outputs:
        if [a.type for a in tensor.axes] != ["batch", "channel"]:
            continue
        ops = [p.id for p in tensor.postprocessing if p.id != "ensure_dtype"]
        kind: Literal["multilabel", "multiclass"]
        if ops == ["sigmoid"]:
            kind = "multilabel"
        elif ops == ["softmax"]:
            kind = "multiclass"
        else:
            raise BioimageioError(
                f"{where}: unsupported: output {tensor.id!r} has postprocessing "
                f"{ops or 'none'} (napari-hpa needs logits and a sigmoid or softmax)"
            )
        return [printable(str(c), 200) for c in tensor.axes[1].channel_names], kind
    raise BioimageioError(
        f"{where}: unsupported: not a classifier (no output with axes batch, channel)"
    )
