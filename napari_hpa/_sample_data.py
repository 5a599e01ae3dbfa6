"""npe2 sample data: the bundled generated HPA-style fields, and a real HPA field if one is at hand.

The generated fields live in ``napari_hpa/bundled_samples/`` (``registry.sample_data_dir()``),
made with ``core.synth.write_samples``. Real HPA images are not shipped: the
"real HPA example" opens the set named by ``$NAPARI_HPA_REAL_SAMPLE`` (an HPA
``<folder>/<id>``, a member file or any image), else the public 4-channel field
of the project's shared data folder when it sits next to the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from .core.image.io import read_image
from .core.model.registry import sample_data_dir

REAL_SAMPLE_ENV = "NAPARI_HPA_REAL_SAMPLE"
_SHARED_FIELD = Path("hpa_public_4ch_examples") / "images" / "57_F11_1"


def _layers(source: str | Path) -> list[tuple]:
    from .layers import image_layer_data

    return image_layer_data(read_image(source))


def synthetic_sample(index: int = 0) -> list[tuple]:
    """Layers of bundled generated field ``index`` (``bundled_samples/synth_000<index>``)."""
    return _layers(sample_data_dir() / f"synth_{index:04d}")


def synthetic_0() -> list[tuple]:
    """Generated HPA-style field 1 (nuclear bodies + ER)."""
    return synthetic_sample(0)


def synthetic_1() -> list[tuple]:
    """Generated HPA-style field 2 (nucleoplasm + microtubules)."""
    return synthetic_sample(1)


def real_sample_path() -> Path | None:
    """Where the real HPA example is, or None (see the module docstring)."""
    env = os.environ.get(REAL_SAMPLE_ENV)
    if env:
        return Path(env).expanduser()
    roots = [
        os.environ.get("NAPARI_HPA_SHARED_DATA", ""),
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for root in roots:
        candidate = Path(root) / _SHARED_FIELD
        if root and candidate.with_name(candidate.name + "_red.png").is_file():
            return candidate
    return None


def real_hpa() -> list[tuple]:
    """A real 4-channel HPA field (not bundled: see :func:`real_sample_path`)."""
    path = real_sample_path()
    if path is None:
        raise FileNotFoundError(
            "No real HPA example on this machine: set NAPARI_HPA_REAL_SAMPLE to an HPA "
            "image (<folder>/<id> of <id>_red.png ... <id>_yellow.png) and try again."
        )
    return _layers(path)
