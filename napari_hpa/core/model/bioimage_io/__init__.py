"""bioimage.io model packages (the family): export a napari-hpa model as one, import one as a model.

``bioimageio.spec`` is an optional dependency (the ``bioimageio`` extra), imported only when a
package is written or read; :func:`~.common.require_bioimageio` says how to install it.
"""

from .common import INSTALL_HINT, BioimageioError, require_bioimageio
from .export import ExportResult, export_package
from .importing import ImportResult, import_package

__all__ = [
    "INSTALL_HINT",
    "BioimageioError",
    "ExportResult",
    "ImportResult",
    "export_package",
    "import_package",
    "require_bioimageio",
]
