"""A model's input steps as bioimage.io says them, and the same steps computed for test tensors.

One list of :class:`Step` says what the package's ``preprocessing`` is; the export both
describes it (:func:`preprocessing_descr`) and computes it (:func:`apply_steps`) on the test
input, so that the test output is what a bioimage.io runner reproduces. What bioimage.io
cannot say (resizing the longer side to ``fit``, tiling, the test-time views, a bright-field
model's padding to a square) is said in the package's documentation
(:func:`unsaid_steps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint import InputSpec

#: napari-hpa's percentile stretch (``tiles.percentile_normalize``) and bioimage.io's default eps.
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.8
EPS = 1e-6


@dataclass(frozen=True)
class Step:
    """One preprocessing step: a bioimage.io operation id and its keywords."""

    op: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def preprocessing_steps(spec: InputSpec) -> list[Step]:
    """Return the steps a tile goes through before the network, in napari-hpa's order."""
    steps: list[Step] = []
    if spec.invert:
        steps.append(Step("scale_linear", {"gain": -1.0, "offset": 1.0}))
    if spec.normalize == "percentile":
        steps.append(
            Step(
                "scale_range", {"min_percentile": LOW_PERCENTILE, "max_percentile": HIGH_PERCENTILE}
            )
        )
        steps.append(Step("clip", {"min": 0.0, "max": 1.0}))
    mean = [float(v) for v in spec.mean] or [0.0] * len(spec.channels)
    std = [float(v) for v in spec.std] or [1.0] * len(spec.channels)
    if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
        steps.append(Step("fixed_zero_mean_unit_variance", {"mean": mean, "std": std}))
    return steps


def apply_steps(steps: list[Step], x: np.ndarray) -> np.ndarray:
    """Apply ``steps`` to a batch (N, C, Y, X) as bioimage.io.core does; float32."""
    out = np.asarray(x, np.float64)
    for step in steps:
        k = step.kwargs
        if step.op == "scale_linear":
            out = out * k["gain"] + k["offset"]
        elif step.op == "scale_range":
            lo = np.quantile(out, k["min_percentile"] / 100, axis=(2, 3), keepdims=True)
            hi = np.quantile(out, k["max_percentile"] / 100, axis=(2, 3), keepdims=True)
            out = (out - lo) / (hi - lo + EPS)
        elif step.op == "clip":
            out = np.clip(out, k["min"], k["max"])
        elif step.op == "fixed_zero_mean_unit_variance":
            mean = np.asarray(k["mean"])[None, :, None, None]
            std = np.asarray(k["std"])[None, :, None, None]
            out = (out - mean) / (std + EPS)
        else:  # pragma: no cover - every op made above is handled
            raise ValueError(f"unknown step {step.op}")
    return out.astype(np.float32)


def preprocessing_descr(steps: list[Step]) -> list[Any]:
    """Return ``steps`` as bioimage.io 0.5 preprocessing descriptions."""
    from bioimageio.spec.model import v0_5

    axes = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    out: list[Any] = []
    for step in steps:
        k = step.kwargs
        if step.op == "scale_linear":
            out.append(
                v0_5.ScaleLinearDescr(
                    kwargs=v0_5.ScaleLinearKwargs(gain=k["gain"], offset=k["offset"])
                )
            )
        elif step.op == "scale_range":
            kwargs = v0_5.ScaleRangeKwargs(
                axes=axes,
                min_percentile=k["min_percentile"],
                max_percentile=k["max_percentile"],
                eps=EPS,
            )
            out.append(v0_5.ScaleRangeDescr(kwargs=kwargs))
        elif step.op == "clip":
            out.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=k["min"], max=k["max"])))
        elif step.op == "fixed_zero_mean_unit_variance":
            along = v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                mean=k["mean"], std=k["std"], axis=v0_5.AxisId("channel")
            )
            out.append(v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=along))
    return out


def unsaid_steps(spec: InputSpec) -> list[str]:
    """Say, one line each, what napari-hpa does to an image that the package's steps do not."""
    notes = []
    if spec.pad_square:
        notes.append("pads the image to a square with each channel's border median first")
    if spec.normalize == "percentile":
        notes.append(
            "computes the 1-99.8 percentile stretch on the whole image (before resizing), "
            "where the package computes it on the tile it is given"
        )
    if spec.fit is None:
        notes.append(f"resizes the whole image to one {spec.size} x {spec.size} tile")
    else:
        notes.append(
            f"resizes the image so that its longer side is {spec.fit} px and cuts it into "
            f"overlapping {spec.size}-px tiles, whose probabilities it averages"
        )
    if spec.views != "none":
        notes.append(f"averages each tile's {spec.views} views (flips and rotations)")
    if spec.optional_channels:
        notes.append(
            f"fills a missing optional channel ({', '.join(spec.optional_channels)}) with zeros"
        )
    return notes
