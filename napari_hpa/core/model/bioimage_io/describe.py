"""The bioimage.io 0.5 description of a napari-hpa model, built with ``bioimageio.spec``.

Everything here is metadata: who made the model, under which licence, what to cite,
its lineage, its training data, its inputs and outputs and how an input is prepared.
The files it names (weights, test tensors, cover, documentation) are written by
:mod:`.export` into the folder the description's paths are relative to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..checkpoint import ModelSpec
from ..names import printable
from .common import (
    ARCH_CALLABLE,
    ARCH_FILE,
    CAM_ID,
    CONFIG_KEY,
    INPUT_ID,
    META_ATTACHMENT,
    ONNX_FILE,
    OUTPUT_ID,
    STATE_FILE,
)
from .processing import Step, preprocessing_descr

#: Default author of a model that names none (pyproject's authors).
DEFAULT_AUTHOR = "napari-hpa developers"
#: The project's own licence: a model whose card names no data licence gets it.
CODE_LICENCE = "BSD-3-Clause"
#: References by task name and by architecture: (text, doi, url).
_TASK_CITATIONS: dict[str, tuple[tuple[str, str | None, str | None], ...]] = {
    "hpa28": (
        (
            "Thul PJ et al. A subcellular map of the human proteome. Science 356 (2017)",
            "10.1126/science.aal3321",
            None,
        ),
        (
            "Ouyang W et al. Analysis of the Human Protein Atlas Image Classification "
            "competition. Nature Methods 16 (2019)",
            "10.1038/s41592-019-0658-6",
            None,
        ),
    ),
}
_ARCH_CITATIONS: dict[str, tuple[str, str | None, str | None]] = {
    "efficientnet_lite0": (
        "Tan M, Le QV. EfficientNet: Rethinking Model Scaling for Convolutional Neural "
        "Networks. ICML (2019)",
        None,
        "https://arxiv.org/abs/1905.11946",
    ),
}
#: Where a task's data come from.
_TASK_DATA_URLS = {
    "hpa28": "https://www.proteinatlas.org",
    "hela10": "https://murphylab.web.cmu.edu/data/",
}
_NAPARI_CITATION = (
    "napari contributors. napari: a multi-dimensional image viewer for Python",
    "10.5281/zenodo.3555620",
    None,
)
#: "CC BY-SA 3.0", "CC BY 4.0", "CC BY-NC-SA 4.0" ... in a model card.
_CC = re.compile(r"\bCC[ -]BY((?:[ -](?:NC|SA|ND))*)[ -](\d\.\d)\b")
#: A napari-hpa model id, ``name@version``, in model.json's ``parent``.
_MODEL_ID = re.compile(r"^(?P<name>[^@\s]+)@v?(?P<version>\d+)$")


@dataclass(frozen=True)
class Shapes:
    """The tensor sizes a package describes, and the largest value of each test output.

    ``channels`` and ``size`` are the input's, ``classes`` the outputs', ``cam_size`` the
    maps' (h, w); ``peaks`` maps an output id to its test tensor's maximum, which bounds
    the absolute tolerance bioimage.io allows for it (1 % of it).
    """

    channels: int
    size: int
    classes: int
    cam_size: tuple[int, int]
    peaks: dict[str, float]


def tolerances(peaks: dict[str, float]) -> list[tuple[str, float]]:
    """Return (output id, absolute tolerance) for each output: 1e-4, at most 1 % of its peak."""
    return [(out, min(1e-4, 0.01 * peak) if peak > 0 else 0.0) for out, peak in peaks.items()]


def card_licence(card: str | None) -> str:
    """Return the SPDX licence of a model whose card names its data's Creative Commons licence.

    A model trained on share-alike data is shared alike, under the first Creative Commons
    licence the card names (``CC BY-SA 3.0`` -> ``CC-BY-SA-3.0``); a card that names none
    gives the project's own licence, :data:`CODE_LICENCE`.
    """
    found = _CC.search(card or "")
    if found is None:
        return CODE_LICENCE
    parts = [p for p in re.split(r"[ -]", found.group(1)) if p]
    return "-".join(["CC", "BY", *parts, found.group(2)])


def bioimageio_id(name: str) -> str:
    """Return ``name`` as a bioimage.io resource id (lower case, ``a-z 0-9 _ - .``)."""
    text = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-/.")
    return text or "model"


def parent_link(spec: ModelSpec) -> tuple[str, str] | None:
    """Return (id, version) of the model's parent when it is a napari-hpa model, else None."""
    found = _MODEL_ID.match(spec.parent or "")
    return (bioimageio_id(found["name"]), found["version"]) if found else None


def citations(spec: ModelSpec) -> list[tuple[str, str | None, str | None]]:
    """Return what to cite for this model: its task's data, its architecture, napari."""
    cites = list(_TASK_CITATIONS.get(spec.task.name, ()))
    if spec.arch in _ARCH_CITATIONS:
        cites.append(_ARCH_CITATIONS[spec.arch])
    cites.append(_NAPARI_CITATION)
    return cites


def training_data_text(spec: ModelSpec) -> str:
    """Say in one paragraph what the model was trained on (model.json's fingerprint, recipe)."""
    parts = []
    if spec.data_fingerprint:
        parts.append(f"Training data: {spec.data_fingerprint}.")
    recipe = spec.training.get("recipe")
    if recipe:
        parts.append(f"Recipe: {recipe}.")
    if spec.task.description:
        parts.append(spec.task.description)
    return printable(" ".join(parts) or "Not recorded in the model's metadata.", limit=2000)


def napari_hpa_config(spec: ModelSpec) -> dict[str, Any]:
    """Return napari-hpa's part of ``config``: class names, thresholds and the whole model.json."""
    return {
        "classes": list(spec.task.classes),
        "kind": spec.task.kind,
        "thresholds": [float(t) for t in spec.thresholds],
        "channels": list(spec.input.channels),
        "optional_channels": list(spec.input.optional_channels),
        "model_id": spec.id,
        "parent": spec.parent,
        "model_json": META_ATTACHMENT,
        "model": spec.to_dict(),
    }


def build_description(
    spec: ModelSpec,
    root: Path,
    steps: list[Step],
    shapes: Shapes,
    *,
    authors: list[str],
    licence: str,
) -> Any:
    """Return the ``ModelDescr`` (format 0.5) of the files written into ``root``.

    Raises ``pydantic.ValidationError`` if bioimageio.spec refuses a field.
    """
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    with ValidationContext(root=root, perform_io_checks=True):
        return v0_5.ModelDescr(**_fields(spec, steps, shapes, authors, licence))


def _fields(
    spec: ModelSpec, steps: list[Step], shapes: Shapes, authors: list[str], licence: str
) -> dict[str, Any]:
    from bioimageio.spec.dataset.v0_3 import DatasetDescr
    from bioimageio.spec.model import v0_5
    from bioimageio.spec.model.v0_5 import Author, CiteEntry, Doi, FileDescr, LicenseId

    classes = list(spec.task.classes)
    channel_axis = v0_5.ChannelAxis(channel_names=list(spec.input.channels))
    inputs = v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description=(
            "one tile of the image, raw intensities (any range); channels "
            + ", ".join(spec.input.channels)
        ),
        axes=[
            v0_5.BatchAxis(),
            channel_axis,
            v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=shapes.size),
            v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=shapes.size),
        ],
        test_tensor=FileDescr(source=Path("test_input.npy")),
        preprocessing=preprocessing_descr(steps),
    )
    classes_axis = v0_5.ChannelAxis(channel_names=classes)
    if spec.task.multilabel:
        post: list[Any] = [v0_5.SigmoidDescr()]
    else:
        post = [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))]
    probabilities = v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description=f"{spec.task.kind} class probabilities (thresholds in config.{CONFIG_KEY})",
        axes=[v0_5.BatchAxis(), classes_axis],
        test_tensor=FileDescr(source=Path("test_probabilities.npy")),
        postprocessing=post,
    )
    h, w = shapes.cam_size
    cam = v0_5.OutputTensorDescr(
        id=v0_5.TensorId(CAM_ID),
        description="class-activation maps: the logits' per-location terms (their mean)",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=classes),
            v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=h, scale=shapes.size / h),
            v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=w, scale=shapes.size / w),
        ],
        test_tensor=FileDescr(source=Path("test_cam.npy")),
    )
    version = torch.__version__.split("+")[0]
    arch_kwargs = {
        "arch": spec.arch,
        "in_channels": shapes.channels,
        "num_classes": shapes.classes,
        "arch_kwargs": dict(spec.arch_kwargs),
    }
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=Path(STATE_FILE),
            architecture=v0_5.ArchitectureFromFileDescr(
                source=Path(ARCH_FILE),
                callable=v0_5.Identifier(ARCH_CALLABLE),
                kwargs=cast(Any, arch_kwargs),
            ),
            pytorch_version=v0_5.Version(version),
        ),
        onnx=v0_5.OnnxWeightsDescr(
            source=Path(ONNX_FILE), opset_version=_opset(), parent="pytorch_state_dict"
        ),
    )
    tolerance = [
        v0_5.ReproducibilityTolerance(
            relative_tolerance=1e-3, absolute_tolerance=atol, output_ids=[v0_5.TensorId(out)]
        )
        for out, atol in tolerances(shapes.peaks)
    ]
    config = v0_5.Config(
        bioimageio=v0_5.BioimageioConfig(
            reproducibility_tolerance=tolerance,
            architecture_type="CNN classifier",
            task="image classification",
            modality="fluorescence microscopy" if "protein" in spec.input.channels else None,
            target_structure=classes if len(classes) <= 40 else [],
        ),
        **cast(Any, {CONFIG_KEY: napari_hpa_config(spec)}),
    )
    link = parent_link(spec)
    cites = [
        CiteEntry(text=t, doi=Doi(d) if d else None, url=v0_5.HttpUrl(u) if u else None)
        for t, d, u in citations(spec)
    ]
    url = _TASK_DATA_URLS.get(spec.task.name)
    dataset = DatasetDescr(
        name=printable(f"training data of {spec.id}", limit=128),
        description=training_data_text(spec),
        source=v0_5.HttpUrl(url) if url else None,
        documentation=FileDescr(source=Path("README.md")),
        authors=[Author(name=a) for a in authors],
        cite=cites,
        license=LicenseId(licence),
        tags=["napari-hpa", spec.task.name],
    )
    return {
        "name": spec.name,
        "description": printable(spec.description or spec.task.description or spec.name, 1000),
        "version": v0_5.Version(str(spec.version)),
        "authors": [Author(name=a) for a in authors],
        "cite": cites,
        "license": LicenseId(licence),
        "documentation": FileDescr(source=Path("README.md")),
        "covers": [FileDescr(source=Path("cover.png"))],
        "attachments": [FileDescr(source=Path(META_ATTACHMENT))],
        "tags": ["napari-hpa", "classification", spec.task.name, spec.arch, "pytorch", "onnx"],
        "inputs": [inputs],
        "outputs": [probabilities, cam],
        "weights": weights,
        "parent": v0_5.LinkedModel(id=v0_5.ModelId(link[0]), version=v0_5.Version(link[1]))
        if link
        else None,
        "training_data": dataset,
        "config": config,
    }


def _opset() -> int:
    from ..backends.export import OPSET

    return OPSET
