"""Opening image files safely: regular files only, and a decoder chosen by content.

Two things a name cannot be trusted for:

* **What the file is.** A FIFO, a device or a socket named ``x.png`` (or a symlink
  to one) would block ``open`` or every read: :func:`open_image_file` checks with
  :func:`os.stat` (after following links) that the target is a regular file, opens
  it with ``O_NONBLOCK`` and checks the open descriptor again, so a file swapped
  between the two checks cannot block either.
* **Which decoder reads it.** Pillow picks one of its ~40 plugins by content
  (PostScript goes to Ghostscript). :func:`sniff_format` reads the magic bytes
  and only :data:`READ_FORMATS` (PNG, JPEG, TIFF) go to a decoder; anything else
  is refused with what its content is.

Over-long names and other ``OSError`` of a path become one-line reasons
(:func:`path_problem`), so that no caller meets a raw ``OSError``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .data import ImageReadError

#: The formats napari-hpa decodes, by content: PNG and JPEG (Pillow), TIFF and OME-TIFF
#: (tifffile). Every other format is refused before any decoder sees it.
READ_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff")
#: The longest file or folder name most file systems take (bytes of one path component).
NAME_MAX = 255

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)
#: Content of formats napari-hpa does not read, named in the refusal.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS (PostScript)"),
    (b"%PDF", "PDF"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"\x01\xda", "SGI"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"gimp xcf", "GIMP XCF"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\x89HDF", "HDF5"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"FORM", "IFF"),
)
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def long_name(path: str | os.PathLike) -> str | None:
    """Return the reason if a component of ``path`` is longer than :data:`NAME_MAX` bytes."""
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            return (
                f"file name is too long ({size} bytes in one name; the file system allows "
                f"{NAME_MAX}): shorten it"
            )
    return None


def path_problem(path: str | os.PathLike, exc: OSError) -> str:
    """Say in one line why ``path`` could not be used, from the ``OSError`` it raised."""
    if exc.errno == errno.ENAMETOOLONG:
        return long_name(path) or "the path is too long for the file system"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back at itself)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open file ({exc.strerror or 'Permission denied'})"
    return f"cannot open file ({exc.strerror or exc})"


def kind_of(mode: int) -> str:
    """Name a non-regular file type (``"a FIFO (named pipe)"`` ...) from ``st_mode``."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_image_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular, non-empty file; never blocks.

    Raises
    ------
    ImageReadError
        For a missing file, a FIFO, device, socket or folder (also behind a
        symlink), an empty file, an over-long name or a file that cannot be opened.
    """
    too_long = long_name(path)
    if too_long:
        raise ImageReadError(path, too_long)
    try:
        st = os.stat(path)  # follows symlinks: what the link leads to is what is opened
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, path_problem(path, exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, f"not a regular file: it is {kind_of(st.st_mode)}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageReadError(path, path_problem(path, exc)) from None
    try:
        st = os.fstat(fd)  # the file opened, not the one stat()ed: a swap cannot slip through
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(path, f"not a regular file: it is {kind_of(st.st_mode)}")
        if st.st_size == 0:
            raise ImageReadError(path, "file is empty (0 bytes)")
        fh = os.fdopen(fd, "rb")
        fh.raw.name = os.fspath(path)  # type: ignore[attr-defined]  # decoders read .name
        return fh
    except BaseException:
        os.close(fd)
        raise


def sniff_format(path: Path, head: bytes) -> str:
    """Return the format of a file from its first bytes: one of :data:`READ_FORMATS`.

    Raises
    ------
    ImageReadError
        For any other content, named when it is a known image or document format.
    """
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        other: str | None = "WebP"
    else:
        other = next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), None)
    if other is None and len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"1234567":
        other = "PNM"
    if other is not None:
        raise ImageReadError(
            path,
            f"not an image napari-hpa reads: the file's content is {other}; "
            "napari-hpa reads only PNG, JPEG and TIFF/OME-TIFF",
        )
    raise ImageReadError(
        path, "not an image file: its content is not PNG, JPEG or TIFF (whatever its name says)"
    )


def check_plane(path: Path, h: int, w: int, limit: int) -> None:
    """Refuse, before decoding, a plane with a zero side or more than ``limit`` pixels."""
    if h == 0 or w == 0:
        raise ImageReadError(path, f"image has a zero-size dimension ({h}x{w})")
    if h * w > limit:
        raise ImageReadError(
            path, f"image is too large: {w}x{h} = {h * w} pixels per plane, limit {limit}"
        )
