"""Reading bytes: files, folders walked recursively and zip archives, streamed.

:func:`iter_inputs` finds every image to score under some paths; :func:`read_bytes` reads one
sample's encoded bytes, or raises :class:`~aigi.io.samples.ImageDecodeError` naming the file
and the reason (missing, a broken link, not a regular file, too large, a bad archive member).
Zip archives are read through a small per-thread cache of open handles.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import zipfile
from typing import Iterable, Iterator

from .samples import PAIRED_MARKER, ImageDecodeError, Sample, label_from_relpath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
# Files larger than this are refused before reading: no real photo needs 256 MB of encoded bytes.
MAX_FILE_BYTES: int = 256 * 2**20


def is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def walk_files(root: str) -> Iterator[str]:
    """Every file below ``root``, depth first and sorted, streamed (no full listing in memory).

    Symlinked folders are not followed (no loops); a broken or looping file link is still
    yielded so that the reader reports it.
    """
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def zip_members(archive: str) -> Iterator[zipfile.ZipInfo]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not info.is_dir() and not info.filename.startswith("__MACOSX/"):
                yield info


def is_paired(source: str | os.PathLike) -> bool:
    """Whether a dataset folder or zip declares itself paired (``aigi-dataset.json`` at its root
    with ``"paired": true``, as ``aigi synth aligned`` writes)."""
    source = os.fspath(source)
    try:
        if os.path.isdir(source):
            path = os.path.join(source, PAIRED_MARKER)
            text = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as zf:
                text = zf.read(PAIRED_MARKER).decode("utf-8") if PAIRED_MARKER in zf.namelist() else ""
        else:
            return False
        return bool(text) and bool(json.loads(text).get("paired"))
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def iter_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[Sample]:
    """Every image to score under ``paths`` (files, folders walked recursively, zips), streamed.

    A file named explicitly is always yielded (a bad one gets an error row later); inside
    folders and zips only files with an image extension are taken. Labels are read from a
    ``real/`` / ``fake/<generator>/`` layout where one is present, for evaluation.
    """
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            paired = is_paired(p)
            for full in walk_files(p):
                rel = os.path.relpath(full, p).replace(os.sep, "/")
                if is_image_name(rel):
                    label, gen = label_from_relpath(rel) or (-1, "")
                    yield Sample(full, rel, label, gen, paired=paired)
        elif p.lower().endswith(".zip") and zipfile.is_zipfile(p):
            paired = is_paired(p)
            for info in zip_members(p):
                if is_image_name(info.filename):
                    label, gen = label_from_relpath(info.filename) or (-1, "")
                    yield Sample(info.filename, info.filename, label, gen, archive=p, paired=paired)
        else:
            yield Sample(p, os.path.basename(p))


# ----------------------------------------------------------------------------- reading bytes

_zip_cache = threading.local()
_ZIP_CACHE_SIZE = 8  # open archives kept per thread (least recently used closed first)


def _open_zip(archive: str) -> zipfile.ZipFile:
    # One handle per (thread, process): ZipFile objects are not safe to share across either.
    # A handle is reopened when the file on disk changes (a rewritten zip must not be read
    # through its old central directory), and only a few are kept open (no fd leak).
    cache = getattr(_zip_cache, "files", None)
    if cache is None or getattr(_zip_cache, "pid", None) != os.getpid():
        cache = _zip_cache.files = {}
        _zip_cache.pid = os.getpid()
    st = os.stat(archive)
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    entry = cache.pop(archive, None)
    if entry is not None and entry[1] != stamp:
        entry[0].close()
        entry = None
    if entry is None:
        entry = (zipfile.ZipFile(archive), stamp)
    cache[archive] = entry  # most recently used last
    while len(cache) > _ZIP_CACHE_SIZE:
        cache.pop(next(iter(cache)))[0].close()
    return entry[0]


def too_large(n_bytes: int, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """The reason a file of ``n_bytes`` is refused unread, or None when it is within the limit."""
    if n_bytes <= max_bytes:
        return None
    return f"file is {n_bytes / 2**20:.0f} MB, over the {max_bytes / 2**20:.0f} MB limit"


def read_bytes(sample: Sample, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The encoded bytes of a sample; :class:`ImageDecodeError` for anything unreadable."""
    name = sample.display
    try:
        if sample.archive:
            info = _open_zip(sample.archive).getinfo(sample.path)
            if reason := too_large(info.file_size, max_bytes):
                raise ImageDecodeError(name, reason)
            return _open_zip(sample.archive).read(info)
        st = os.stat(sample.path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError(name, "not a regular file")
        if reason := too_large(st.st_size, max_bytes):
            raise ImageDecodeError(name, reason)
        with open(sample.path, "rb") as f:
            return f.read(max_bytes + 1)
    except ImageDecodeError:
        raise
    except KeyError:
        raise ImageDecodeError(name, "no such member in the archive") from None
    except PermissionError:
        raise ImageDecodeError(name, "permission denied") from None
    except FileNotFoundError:
        raise ImageDecodeError(name, "file not found (or a broken link)") from None
    except OSError as e:
        raise ImageDecodeError(name, f"cannot read: {e.strerror or e}") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise ImageDecodeError(name, f"cannot read from archive: {e}") from None


__all__ = ["IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "is_paired", "iter_inputs", "read_bytes", "too_large"]
