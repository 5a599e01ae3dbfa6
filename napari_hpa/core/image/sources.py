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


def hpa_members(folder: Path, image_id: str) -> dict[str, Path]:
    """Existing channel files of the set ``folder/image_id``, by colour (none: empty).

    The reader uses it to name the files it decodes, and :func:`find_images` to tell an
    HPA id from a missing path.
    """
    found: dict[str, Path] = {}
    for color in HPA_COLORS:
        names = (f"{image_id}_{color}{e}" for ext in _HPA_EXTS for e in (ext, ext.upper()))
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is not None:
            found[color] = hit
    return found


def is_hpa_source(source: str | os.PathLike) -> bool:
    """Return True for an HPA channel file, or a ``<folder>/<id>`` that has channel files."""
    p = Path(source)
    if p.is_file():
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
    name pattern ``glob``; hidden names (``.x``) are skipped, symlinked folders are
    not followed (so a link loop cannot hang the walk), unreadable folders are
    ignored. Image-named symlinks that lead nowhere are kept, so reading them
    reports the broken link instead of the image silently missing. Files named
    explicitly are kept whatever their extension.

    Raises
    ------
    ImageReadError
        For a path that is neither a file, a folder, an HPA id nor a matching wildcard.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: set[str] = set()
    for item in paths:
        p = Path(item).expanduser()
        if p.is_dir():
            for f in _walk(p, recursive):
                if glob is None or fnmatch.fnmatch(f.name, glob):
                    out.add(_source_of(f))
        elif p.is_file():
            out.add(_source_of(p))
        elif p.is_symlink() or hpa_members(p.parent, p.name):  # a dangling link: read it
            out.add(str(p))  # to say why (loop or missing target)
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
    return str(f.parent / parts[0]) if parts else str(f)


def _walk(root: Path, recursive: bool) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            f = Path(dirpath) / name
            if f.is_file() or f.is_symlink():  # a dangling link becomes an error, not a gap
                found.append(f)
    return found
