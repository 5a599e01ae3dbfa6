"""npe2 sample data: a real HPA field (bundled, reduced) and generated HPA-style fields.

Both live in ``napari_hpa/bundled_samples/`` (``registry.sample_data_dir()``). The
real field is HPA image 57_F11_1 (A-431 cells, RGBY, Plasma membrane + Cytosol) at
half its resolution (864 px; CC BY-SA 3.0, see ``bundled_samples/README.md``).
``$NAPARI_HPA_REAL_SAMPLE`` (an HPA ``<folder>/<id>``, a member file or any image)
opens another real image instead. The generated fields (``core.synth.write_samples``)
stay for tests and demos.
"""

from __future__ import annotations

import os
from pathlib import Path

from .core.image.io import read_image
from .core.model.registry import sample_data_dir

REAL_SAMPLE_ENV = "NAPARI_HPA_REAL_SAMPLE"
#: The bundled real field: ``hpa_57_F11_1_{red,green,blue,yellow}.png``.
REAL_FIELD = "hpa_57_F11_1"


def _layers(source: str | Path) -> list[tuple]:
    from .layers import image_layer_data

    return image_layer_data(read_image(source))


def synthetic_sample(index: int = 0) -> list[tuple]:
    """Layers of bundled generated field ``index`` (``bundled_samples/synth_000<index>``)."""
    return _layers(sample_data_dir() / f"synth_{index:04d}")


def synthetic_0() -> list[tuple]:
    """Return generated HPA-style field 1 (nuclear bodies + ER) as layers."""
    return synthetic_sample(0)


def synthetic_1() -> list[tuple]:
    """Return generated HPA-style field 2 (nucleoplasm + microtubules) as layers."""
    return synthetic_sample(1)


def real_sample_path() -> Path:
    """Where the real HPA example is: ``$NAPARI_HPA_REAL_SAMPLE``, else the bundled field."""
    env = os.environ.get(REAL_SAMPLE_ENV)
    if env:
        return Path(env).expanduser()
    return sample_data_dir() / REAL_FIELD


def real_hpa() -> list[tuple]:
    """Return a real 4-channel HPA field (A-431, Plasma membrane + Cytosol) as layers."""
    return _layers(real_sample_path())
