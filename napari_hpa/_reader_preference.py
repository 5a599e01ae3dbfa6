"""napari-hpa as napari's preferred reader of HPA channel files and OME-TIFF (npe2 ``on_activate``).

napari opens a dropped file without asking only when one reader can read it or
when its reader preference (``settings.plugins.extension2reader``: fnmatch
pattern -> plugin, "Preferences > Plugins" in the GUI) names one; npe2 has no
reader priority. napari's builtin reader also claims ``*.png``, ``*.jpg`` and
``*.tif``, so without a preference every drop of an HPA channel file or an
OME-TIFF asks the user, with the builtin reader preselected, and the builtin
reader makes an OME-TIFF one stack whose channels Predict cannot find.

:func:`activate` is the npe2 activation hook (``on_activate`` in napari.yaml):
npe2 calls it the first time napari-hpa is used in a napari session (a dock, a
sample, a read). It maps napari-hpa's own patterns to napari-hpa where the user
has no mapping for them; napari saves its settings to its settings file, so
every later napari session opens these files with napari-hpa from the first
drop. Plain images (``*.png``, ``*.tif``) are not claimed: they stay the user's
choice in napari's dialog. A pattern the user mapped to another reader is kept,
and so is, by napari's rule, a broader pattern the user mapped first (napari
picks the most specific pattern, and among equally specific ones the earlier).
"""

from __future__ import annotations

import logging
from typing import Any

from .core.image.sources import HPA_COLORS, IMAGE_EXTENSIONS

#: napari-hpa's plugin name, as napari's reader preference names readers.
PLUGIN = "napari-hpa"
#: OME-TIFF: read as one layer per named channel (napari's builtin reader makes one stack).
OME_PATTERNS: tuple[str, ...] = ("*.ome.tif", "*.ome.tiff", "*.OME.TIF", "*.OME.TIFF")
#: Members of an HPA channel set (``<id>_red.png`` ... ``<id>_yellow.tif``), opened as the
#: set. napari matches patterns case-sensitively on Linux and macOS, hence both cases of
#: the extension; fnmatch ``[pP]`` sets would rank below a user's plain ``*.png``.
HPA_PATTERNS: tuple[str, ...] = tuple(
    f"*_{color}{ext}"
    for color in HPA_COLORS
    for lower in IMAGE_EXTENSIONS
    for ext in (lower, lower.upper())
)
#: Every pattern napari-hpa asks napari to open with napari-hpa, and no other.
READER_PATTERNS: tuple[str, ...] = HPA_PATTERNS + OME_PATTERNS

log = logging.getLogger(__name__)


def prefer_napari_hpa(settings: Any = None) -> list[str]:
    """Map napari-hpa's :data:`READER_PATTERNS` to napari-hpa where the user set nothing.

    Parameters
    ----------
    settings
        A ``napari.settings.NapariSettings``; napari's own (``get_settings()``) by default.

    Returns
    -------
    list[str]
        The patterns added now (none when all are mapped already, by napari-hpa or
        by the user).
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [p for p in READER_PATTERNS if p not in current]
    if added:
        # Written through napari's public settings API, by assigning the whole mapping as
        # napari's reader dialog does, so napari validates it, shows it in Preferences >
        # Plugins and saves it to its settings file. The user's mappings come first and
        # are never replaced: napari-hpa only fills in its own patterns.
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN)}
    return added


def activate(context: Any = None) -> None:
    """Make napari-hpa the preferred reader of its files when napari activates it (npe2 hook).

    A failure (an unwritable settings file) is logged, never raised: npe2 would
    then refuse to activate napari-hpa, and its docks and reader with it.
    """
    try:
        added = prefer_napari_hpa()
    except Exception:  # noqa: BLE001 - a missing preference only brings back napari's dialog
        log.warning("napari-hpa could not set napari's reader preference", exc_info=True)
        return
    if added:
        log.info("napari opens %s with napari-hpa (Preferences > Plugins)", ", ".join(added))
