"""Generated HPA-style fields for tests, benchmarks and demos.

The public face is :mod:`.fields`; ``canvas`` (cell geometry, drawing primitives,
reference stains) and ``patterns`` (one painter per HPA class) are its parts.
"""

from .fields import (
    SUPPORTED_CLASSES,
    SynthField,
    make_dataset,
    make_field,
    sample_files,
    write_samples,
)

__all__ = [
    "SUPPORTED_CLASSES",
    "SynthField",
    "make_dataset",
    "make_field",
    "sample_files",
    "write_samples",
]
