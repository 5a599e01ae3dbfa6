"""Where images are: HPA channel-set naming and grouping, and :func:`find_images`.

A *source* is the string that names one image everywhere (GUI, CLI, annotations):

* an HPA channel set ``<folder>/<id>``, whose files are ``<id>_red``, ``_green``,
  ``_blue`` and ``_yellow`` (``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg``).
  They are read as channels ``tasks.HPA_CHANNELS`` (microtubules, protein,
  nucleus, er), in that order; a partial set (a Kaggle ``<id>_green.png`` alone,
  red/green/blue without yellow) is read with the channels it has, as long as the
  protein's green file is there. A path to any one member names the whole set;
* any other image file: its path.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .data import ImageReadError

#: File name endings treated as images by :func:`find_images`.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: HPA colour suffixes in channel order (red = microtubules ... yellow = ER).
HPA_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
#: The colour of the protein channel, the one file an HPA set cannot do without.
PROTEIN_COLOR = "green"
_HPA_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".ome.tif", ".ome.tiff")
_HPA_RE = re.compile(
    r"^(?P<id>.+)_(?P<color>red|green|blue|yellow)\.(?:ome\.)?(?:png|tiff?|jpe?g)$", re.I
)


def split_hpa_name(path: str | os.PathLike) -> tuple[str, str] | None:
    """Return ``(id, colour)`` for an HPA channel file name such as ``x_red.png``, else None."""
    m = _HPA_RE.match(Path(path).name)
    return (m.group("id"), m.group("color").lower()) if m else None


def path_mode(path: str | os.PathLike) -> int | None:
    """``st_mode`` of what ``path`` leads to (links followed), or None if it cannot be stat()ed.

    Never raises: ``Path.is_file`` and friends raise for an over-long name or a
    folder without search permission, and one such path must not stop a listing.
    """
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None


def _is_regular(path: str | os.PathLike) -> bool:
    mode = path_mode(path)
    return mode is not None and stat.S_ISREG(mode)


def hpa_members(folder: Path, image_id: str) -> dict[str, Path]:
    """Existing channel files of the set ``folder/image_id``, by colour (none: empty).

    The reader uses it to name the files it decodes, and :func:`find_images` to tell an
    HPA id from a missing path. Only regular files count: a FIFO named ``x_green.png``
    is no channel file (reading it would block).
    """
    found: dict[str, Path] = {}
    for color in HPA_COLORS:
        names = (f"{image_id}_{color}{e}" for ext in _HPA_EXTS for e in (ext, ext.upper()))
        hit = next((folder / n for n in names if _is_regular(folder / n)), None)
        if hit is not None:
            found[color] = hit
    return found


def is_hpa_source(source: str | os.PathLike) -> bool:
    """Return True for an HPA channel file, or a ``<folder>/<id>`` that has channel files."""
    p = Path(source)
    if _is_regular(p):
        return split_hpa_name(p) is not None
    return bool(hpa_members(p.parent, p.name))


def find_images(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    recursive: bool = True,
    glob: str | None = None,
) -> list[str]:
    """Expand files, folders, HPA ids and wildcards into sorted, unique sources.

    HPA channel files become one ``<folder>/<id>`` source (complete or not: a set
    without its protein file fails later, in :func:`~.io.read_image`). Folders are walked
    (``recursive``) for :data:`IMAGE_EXTENSIONS`, optionally filtered by the file
    name pattern ``glob``; hidden names (``.x``) are skipped and symlinked folders are
    not followed (so a link loop cannot hang the walk).

    Nothing that cannot be read goes missing in silence: a folder that cannot be
    listed is given as a source of its own, and image-named entries that are not
    regular files (a link that leads nowhere, a FIFO, a device) are kept, so that
    reading them names the problem (:func:`~.io.read_image` refuses them without
    blocking) instead of the images silently missing. Files named explicitly are
    kept whatever their extension, and so are names too long for the file system
    (reading one says so).

    Raises
    ------
    ImageReadError
        For a path that is neither a file, a folder, an HPA id nor a matching wildcard.
    """
    from .files import long_name

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: set[str] = set()
    for item in paths:
        p = Path(item).expanduser()
        if long_name(p):  # no file can have this name; reading it says so, and a batch goes on
            out.add(str(p))
            continue
        mode = path_mode(p)
        if mode is not None and stat.S_ISDIR(mode):
            files, unreadable = _walk(p, recursive)
            out.update(str(d) for d in unreadable)  # whatever glob says: it may hold matches
            for f in files:
                if glob is None or fnmatch.fnmatch(f.name, glob):
                    out.add(_source_of(f))
        elif mode is not None or os.path.islink(p) or hpa_members(p.parent, p.name):
            out.add(_source_of(p) if mode is not None else str(p))  # read_image says why
        elif _glob.has_magic(str(item)):
            matches = [
                m
                for m in _glob.glob(str(p), recursive=True)
                if os.path.isdir(m) or m.lower().endswith(IMAGE_EXTENSIONS)
            ]
            out.update(find_images(matches, recursive, glob) if matches else [])
        else:
            raise ImageReadError(p, "no such file, folder or HPA channel set")
    return sorted(out)


def _source_of(f: Path) -> str:
    parts = split_hpa_name(f)
    if parts and _is_regular(f):  # a FIFO named x_green.png is read, and refused, alone
        return str(f.parent / parts[0])
    return str(f)


def _walk(root: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """Image-named entries under ``root``, and the folders that could not be listed."""
    found: list[Path] = []
    unreadable: list[Path] = []

    def failed(exc: OSError) -> None:
        unreadable.append(Path(exc.filename) if exc.filename else root)

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:  # every entry that is not a folder: files, links, FIFOs ...
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return found, unreadable
