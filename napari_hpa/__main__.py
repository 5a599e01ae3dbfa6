"""``python -m napari_hpa`` is the ``napari-hpa`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
