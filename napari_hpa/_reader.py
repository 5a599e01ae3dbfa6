"""npe2 reader: HPA channel sets, (OME-)TIFF, PNG and JPEG, through ``core.io.read_image``.

An HPA set (``<id>_red.png`` ... ``_yellow.png``; any member file, the
``<folder>/<id>`` name or a folder holding sets) opens as one image layer per
channel file it has, microtubules red, protein green, nucleus blue and ER
yellow, blended additively: a partial set (a Kaggle ``_green.png`` alone, a set
without ``_yellow``) opens with the channels found, since the models say which
ones they can do without. RGB files open as red/green/blue channel layers (what
Predict needs), gray files as one layer. A file that cannot be read gives a
napari notification with the reason first and the file, never a traceback: that
includes any image-named path that is not a regular file (a FIFO ``x.png``, a broken
link) or cannot be looked at (a name over 255 bytes, a folder without permission),
which :func:`read_image` refuses at once instead of napari's own reader blocking on it.
napari chooses this reader without asking for HPA channel files and OME-TIFF
(``_reader_preference``); plain images are left to the user's choice.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core.image.files import long_name
from .core.image.io import ImageReadError, read_image
from .core.image.sources import IMAGE_EXTENSIONS, find_images, is_hpa_source, split_hpa_name

PathLike = str | os.PathLike
ReaderFunction = Callable[[Any], list[tuple]]
#: What a reader returns to say "handled, nothing to add" (napari's null-layer sentinel).
NOTHING: list[tuple] = [(None,)]


def _supported_file(p: Path) -> bool:
    return p.name.lower().endswith(IMAGE_EXTENSIONS)


#: ``stat`` errors that mean "nothing is there": such a path is not ours to open.
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def _look(p: Path) -> tuple[int | None, bool]:
    """Look at ``p`` without raising: ``(st_mode, there)``.

    ``Path.is_dir`` raises for a name over 255 bytes or a folder without permission.
    ``st_mode`` follows links (None when ``stat`` fails). ``there`` is False only when
    nothing is at ``p``: a dangling link, a link loop, an over-long name or a denied
    folder is there, and reading it says which.
    """
    try:
        return os.stat(p).st_mode, True
    except ValueError:  # a NUL byte: no file can have that name
        return None, False
    except OSError as exc:
        return None, exc.errno not in _MISSING or os.path.islink(p)


def _source_for(path: PathLike) -> tuple[str | None, str]:
    """Return the source to open for ``path`` and a note for the user ('' if none).

    Every image-named path that is there goes to :func:`read_image`, whatever it is (a
    FIFO, a device, a dangling link): it refuses them at once, with the reason.
    """
    p = Path(path).expanduser()
    mode, there = _look(p)
    if mode is not None and stat.S_ISDIR(mode):
        try:
            sources = find_images(p, recursive=False)
        except ImageReadError:
            return None, ""
        if not sources:
            return None, ""
        note = ""
        if len(sources) > 1:
            note = (
                f"{p}: {len(sources)} images; opened {Path(sources[0]).name}. "
                "Use Next image in the Annotate panel to walk through the others."
            )
        return sources[0], note
    if _supported_file(p):
        return (str(p), "") if there else (None, "")
    if mode is not None:  # a file of another kind: not ours
        return None, ""
    if is_hpa_source(p) or (long_name(p) and not p.suffix):  # <folder>/<id> of an HPA set
        return str(p), ""
    return None, ""


def openable_path(path: PathLike) -> str:
    """Return a path ``viewer.open`` accepts: an HPA ``<folder>/<id>`` becomes its first file."""
    p = Path(path).expanduser()
    if not os.path.exists(p) and is_hpa_source(p):  # os.path: never raises
        members = sorted(p.parent.glob(f"{p.name}_*"))
        hit = next((m for m in members if split_hpa_name(m)), None)
        if hit is not None:
            return str(hit)
    return str(p)


def get_reader(path: PathLike | list[PathLike]) -> ReaderFunction | None:
    """Return a reader for ``path`` if napari-hpa can open it, else None.

    Parameters
    ----------
    path
        A file, a folder, an HPA ``<folder>/<id>``, or a list of them (each one is
        opened; members of the same HPA set open the set once).
    """
    paths = path if isinstance(path, list) else [path]
    if not paths or any(_source_for(p)[0] is None for p in paths):
        return None
    return read


def read(path: PathLike | list[PathLike]) -> list[tuple]:
    """Read ``path`` (or several) into layer data tuples; notify on failure."""
    from .layers import image_layer_data, read_error_message

    paths = path if isinstance(path, list) else [path]
    out: list[tuple] = []
    seen: set[str] = set()
    for p in paths:
        source, note = _source_for(p)
        if source is None:
            _notify("warning", f"{p}: not an image napari-hpa can read")
            continue
        try:
            image = read_image(source)
        except ImageReadError as exc:
            _notify("error", read_error_message(exc))
            continue
        except MemoryError:
            _notify("error", f"Cannot open {source}: not enough memory")
            continue
        if image.source in seen or _already_open(image.source, p, image.channel_names):
            continue
        seen.add(image.source)
        if note:
            _notify("info", note)
        reduced = _downscaled(image.metadata)
        if reduced:
            _notify("info", f"{image.source}: {reduced}")
        out += image_layer_data(image)
    return out or NOTHING


def _downscaled(meta: dict[str, Any]) -> str:
    """Say when ``read_image`` reduced a huge image, so nobody mistakes it for full size."""
    for m in [meta, *meta.get("channels", [])]:
        if m.get("downscaled"):
            h, w = m["original_shape"]
            return (
                f"{w}x{h} pixels is too large to work on at full size; "
                f"opened reduced {m['downscaled']}x"
            )
    return ""


def _already_open(source: str, path: PathLike, channels: Sequence[str]) -> bool:
    """Tell whether ``path`` is a member of an HPA set whose ``channels`` all have a layer.

    Dropping the files of a set makes napari call the reader once per file; the
    first call opens the whole set, with the channels it has (one for a Kaggle
    ``_green.png`` alone, up to four), and the calls for the other members do
    nothing. A channel without a layer (deleted, or a file added to the set since)
    opens the set again. A plain RGB or gray file is one image of its own, not a
    member of a set: opening it again adds it again, as napari does.
    """
    if split_hpa_name(path) is None or not channels:
        return False
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - no viewer, no duplicates
        return False
    if viewer is None:
        return False
    from .layers import meta

    ours = [meta(lyr) for lyr in viewer.layers]
    open_channels = {m.get("channel") for m in ours if m.get("source") == source}
    return set(channels) <= open_channels


def _notify(severity: str, message: str) -> None:
    """Show a napari notification (a toast in the viewer, a log line without one)."""
    from napari.utils.notifications import show_error, show_info, show_warning

    {"error": show_error, "warning": show_warning}.get(severity, show_info)(message)
