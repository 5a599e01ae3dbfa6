"""Unpack a bioimage.io zip from anywhere safely: no entry outside its folder, sizes bounded.

A zip names its entries itself, so a hostile one may name ``../../.bashrc``, an absolute
path, a link, or claim a few bytes and inflate to gigabytes. Every entry is checked before
anything is written: a plain relative name inside the target, a regular file, at most
:data:`MAX_ENTRIES` of them, and the bytes actually inflated (not the sizes the zip
claims) bounded per file and in all.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .common import BioimageioError

#: Bounds on a package: entries, one file, all files (the weights are two copies of a model).
MAX_ENTRIES = 1000
MAX_FILE_BYTES = 1 * 2**30
MAX_TOTAL_BYTES = 2 * 2**30
_CHUNK = 2**20


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Say why a zip entry may not be unpacked, or None."""
    name = info.filename
    path = PurePosixPath(name)
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"entry {name!r} is an absolute or Windows path"
    if any(part in ("..", "") for part in path.parts) or "\x00" in name:
        return f"entry {name!r} points outside the package"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the zip gives no type, a plain file
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return f"entry {name!r} is a link or special file"
    return None


def unpack(zip_path: Path, target: Path) -> Path:
    """Unpack ``zip_path`` into the existing folder ``target`` and return ``target``.

    Raises
    ------
    BioimageioError
        For a file that is not a zip, an entry outside the folder, a link, too many
        entries or too many bytes, naming the file; nothing outside ``target`` is written.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BioimageioError(f"{zip_path}: not a readable zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BioimageioError(
                f"{zip_path}: {len(infos)} entries (a package has at most {MAX_ENTRIES})"
            )
        for info in infos:
            problem = _entry_problem(info)
            if problem:
                raise BioimageioError(f"{zip_path}: refused: {problem}")
        root = target.resolve()
        total = 0
        for info in infos:
            dest = (root / info.filename).resolve()
            if root not in dest.parents and dest != root:
                raise BioimageioError(f"{zip_path}: refused: entry {info.filename!r} leaves it")
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            total += _copy_bounded(archive, info, dest, zip_path, MAX_TOTAL_BYTES - total)
    return target


def _copy_bounded(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, zip_path: Path, left: int
) -> int:
    """Inflate one entry to ``dest``, counting the bytes really written; return them."""
    limit = min(MAX_FILE_BYTES, left)
    written = 0
    try:
        with archive.open(info) as src, dest.open("xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise BioimageioError(
                        f"{zip_path}: refused: {info.filename!r} inflates past "
                        f"{limit:,} bytes (a file at most {MAX_FILE_BYTES:,}, "
                        f"all at most {MAX_TOTAL_BYTES:,})"
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise BioimageioError(f"{zip_path}: {info.filename!r} cannot be read ({exc})") from None
    except FileExistsError:
        raise BioimageioError(f"{zip_path}: entry {info.filename!r} appears twice") from None
    return written
