"""What the bioimage.io export and import share: a package's file names, errors, the extra."""

from __future__ import annotations

import importlib.util

from ..folders import CheckpointError

#: The one line that says how to get bioimage.io support.
INSTALL_HINT = (
    "bioimage.io support needs the bioimageio extra: pip install 'napari-hpa[bioimageio]'"
)
#: The key of napari-hpa's own metadata in a package's ``config``.
CONFIG_KEY = "napari-hpa"
#: Files of a package napari-hpa writes (inside the zip).
ARCH_FILE = "napari_hpa_arch.py"
ARCH_CALLABLE = "NapariHpaClassifier"
STATE_FILE = "weights.pt"
ONNX_FILE = "weights.onnx"
META_ATTACHMENT = "napari_hpa_model.json"
INPUT_ID = "input"
OUTPUT_ID = "probabilities"
CAM_ID = "cam"


class BioimageioError(CheckpointError):
    """A bioimage.io package that cannot be written or read, in one line naming the file."""


def require_bioimageio() -> None:
    """Raise :class:`BioimageioError` with :data:`INSTALL_HINT` when bioimageio.spec is missing."""
    try:
        found = importlib.util.find_spec("bioimageio.spec") is not None
    except (ModuleNotFoundError, ValueError):
        found = False
    if not found:
        raise BioimageioError(INSTALL_HINT)
