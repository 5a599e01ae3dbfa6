"""Turn a bioimage.io model package (a zip or a folder) into a napari-hpa model folder.

Nothing in the package runs: a zip is unpacked by :mod:`.archive` (no entry outside its
folder, sizes bounded), the description is read by bioimageio.spec (YAML and pydantic;
the architecture's source file is never imported), and the ``pytorch_state_dict`` weights
are read with ``torch.load(weights_only=True)`` (plain tensors only) into a napari-hpa
architecture they fit exactly. The model is saved with
:func:`~napari_hpa.core.model.registry.save_new_version`, as ``import-weights`` does.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..adding import fit_problem, load_fitted
from ..architectures.base import arch_parameters, available_archs, build_model
from ..checkpoint import CARD_FILE, ModelSpec, import_torch_weights
from ..names import check_model_name, printable
from ..registry import save_new_version
from ..sanity import weights_problem
from .archive import unpack
from .common import BioimageioError, require_bioimageio
from .describe import bioimageio_id
from .reading import PackageModel, own_spec, read_package_model

#: The names a package's description file may have, the current one first.
DESCRIPTION_FILES = ("rdf.yaml", "bioimageio.yaml")


@dataclass(frozen=True)
class ImportResult:
    """The folder of the imported model, its spec, and what was only nearly as the package says."""

    path: Path
    spec: ModelSpec
    notes: tuple[str, ...]


def import_package(
    source: str | Path, name: str | None = None, root: str | Path | None = None
) -> ImportResult:
    """Import the package at ``source`` as the next version of ``name`` in ``root``.

    Parameters
    ----------
    source
        A bioimage.io model zip, or a folder holding ``rdf.yaml``.
    name
        The napari-hpa model name (default: the package's name).
    root
        The models folder (default: the user's).

    Raises
    ------
    BioimageioError
        For an unsupported or unsafe package, in one line naming the file and the reason.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise BioimageioError(f"{source}: no such file or folder")
    require_bioimageio()
    if name is not None:
        _checked(name, source)
    with tempfile.TemporaryDirectory(prefix="napari-hpa-import-") as tmp:
        folder = source if source.is_dir() else unpack(source, Path(tmp))
        descr_file = next((folder / f for f in DESCRIPTION_FILES if (folder / f).is_file()), None)
        if descr_file is None:
            raise BioimageioError(f"{source}: no rdf.yaml: not a bioimage.io package")
        descr = _load(descr_file, source)
        chosen = _checked(name or bioimageio_id(str(descr.name))[:80], source)
        model = read_package_model(descr, str(source), chosen)
        weights = descr.weights.pytorch_state_dict
        if weights is None:
            have = ", ".join(k for k, v in descr.weights if v is not None) or "none"
            raise BioimageioError(
                f"{source}: unsupported: no pytorch_state_dict weights (it has {have}); "
                "napari-hpa imports a state dict of one of its architectures"
            )
        state = _state(folder, weights.source, source)
        net, spec = _fit(model, state, source)
        origin = own_spec(descr)
        spec.training = {
            **spec.training,
            "imported_from": str(source.resolve()),
            "bioimageio": {
                "name": printable(descr.name, 200),
                "version": str(descr.version),
                "exported_from": f"{origin['name']}@{origin['version']}" if origin else None,
            },
        }
        if model.spec.parent is None:
            spec.parent = _parent_id(descr)
        card = _card(folder, descr)
        path = save_new_version(net.eval(), spec, root, write_extra=card)
    return ImportResult(path, spec, tuple(model.notes))


def _checked(name: str, source: Path) -> str:
    try:
        return check_model_name(name)
    except ValueError as exc:
        raise BioimageioError(f"{source}: {exc}") from None


def _load(descr_file: Path, source: Path) -> Any:
    from bioimageio.spec import InvalidDescr, load_description

    try:
        descr = load_description(descr_file, format_version="latest", perform_io_checks=True)
    except Exception as exc:  # noqa: BLE001 - a file from anywhere: any failure is one line
        raise BioimageioError(
            printable(f"{source}: not a readable bioimage.io description ({exc})", 400)
        ) from None
    if isinstance(descr, InvalidDescr):
        reason = printable(descr.get_reason(), 300)
        raise BioimageioError(f"{source}: invalid bioimage.io description ({reason})")
    if descr.type != "model":
        raise BioimageioError(f"{source}: unsupported: a bioimage.io {descr.type}, not a model")
    return descr


def _state(folder: Path, src: Any, source: Path) -> dict[str, torch.Tensor]:
    """Read the state dict from a file inside the package, with weights_only=True."""
    rel = str(src)
    if "://" in rel:
        raise BioimageioError(
            f"{source}: unsupported: the weights are at a URL ({printable(rel, 100)}); "
            "napari-hpa imports packages that hold their weights"
        )
    path = (folder / rel).resolve()
    if folder.resolve() not in path.parents:
        raise BioimageioError(f"{source}: refused: weights {rel!r} lie outside the package")
    return import_torch_weights(path)  # torch.load(weights_only=True): nothing runs


def _fit(
    model: PackageModel, state: dict[str, torch.Tensor], source: Path
) -> tuple[torch.nn.Module, ModelSpec]:
    """Build the napari-hpa network the state dict fits exactly; return it loaded and its spec."""
    spec = model.spec
    state = {k.removeprefix("module."): v for k, v in state.items()}
    n_in, n_out = len(spec.input.channels), spec.task.num_classes
    candidates: list[tuple[str, dict[str, Any]]] = []
    hint = model.arch_kwargs.get("arch") if model.arch_hint == "naparihpaclassifier" else None
    hint = str(hint or model.arch_hint or "")
    if hint in available_archs():
        accepted = arch_parameters(hint)
        own = model.arch_kwargs.get("arch_kwargs", model.arch_kwargs)
        candidates.append((hint, {k: v for k, v in dict(own).items() if k in accepted}))
    candidates += [(a, {}) for a in available_archs() if a != hint]
    for arch, kwargs in candidates:
        try:
            net = build_model(arch, n_in, n_out, **kwargs)
        except (ValueError, TypeError, ImportError):
            continue
        if fit_problem(net, state, arch) is not None:
            continue
        problem = weights_problem(state)
        if problem:
            raise BioimageioError(f"{source}: {problem}; the model cannot give meaningful outputs")
        load_fitted(net, state)
        spec.arch, spec.arch_kwargs = arch, kwargs
        return net, spec
    raise BioimageioError(
        f"{source}: unsupported: the state dict fits none of napari-hpa's architectures "
        f"({', '.join(available_archs())}) with {n_in} channels and {n_out} classes"
    )


def _parent_id(descr: Any) -> str:
    return printable(f"bioimage.io {descr.id or descr.name} {descr.version or ''}".strip(), 200)


def _card(folder: Path, descr: Any) -> Any:
    """Copy the package's documentation (Markdown) in as the model card, if it has one."""
    doc = getattr(descr, "documentation", None)
    path = (folder / str(doc.source)).resolve() if doc is not None else None
    inside = path is not None and folder.resolve() in path.parents and path.suffix == ".md"

    def write(tmp: Path) -> None:
        if inside and path is not None and path.is_file():
            shutil.copyfile(path, tmp / CARD_FILE)

    return write
