"""Datasets (folder, zip, CSV manifest), the public split rule, and safe image decoding.

Data flows one way through aigi: file -> image -> tensor -> features -> heads -> scores.
This module owns the first two steps: finding image files and turning bytes into an RGB
``PIL.Image`` (or a clear :class:`ImageDecodeError` naming the file and the reason).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
SPLITS = ("train", "val", "test", "all")
REAL = "real"
PAIRED_MARKER = "aigi-dataset.json"
ARCHIVE_SEPARATOR = "::"  # "archive.zip::member": how results and manifests name a zip member  # a dataset root file; {"paired": true} keeps pairs in one split
# Pillow's own decompression-bomb limit (~89.5 megapixels); checked on the header, before decoding.
MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
# Files larger than this are refused before reading: no real photo needs 256 MB of encoded bytes.
MAX_FILE_BYTES: int = 256 * 2**20


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


# Decoding threads for scoring: half the cores, the rest for the model. On the 2-core
# benchmark machine that is one thread, the faster choice with torch for the default model
# and CLIP ViT-B/32 (BENCHMARKS.md, Throughput; use --workers 2 with --runtime onnx there).
DECODE_WORKERS: int = max(1, _usable_cpus() // 2)


class ImageDecodeError(Exception):
    """A file that cannot be turned into an image; ``path`` and ``reason`` are kept apart."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable (process pools, Ray): rebuild from (path, reason)
        return (type(self), (self.path, self.reason))


# ----------------------------------------------------------------------------- split rule


def split_of(relpath: str) -> str:
    """The public, fixed split of a file: sha1 of its relative path, mod 10 (0 test, 1 val).
    For a paired dataset pass the pair key (:func:`pair_key`) instead of the path."""
    h = int(hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest(), 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def pair_key(relpath: str) -> str:
    """What a real image and its aligned fakes share: the path of the real one
    (``real/a/x.jpg`` and ``fake/taesd/a/x.jpg`` -> ``real/a/x.jpg``). So a pair lands in the split
    its real photo has in the dataset it came from, when the layout below ``real/`` is kept."""
    parts = relpath.split("/")
    top = parts[0].lower()
    if top == "fake" and len(parts) >= 3:
        return "/".join(["real", *parts[2:]])
    return relpath


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


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One image file: where its bytes are, and what we know about it.

    ``path`` is a filesystem path, or a member name when ``archive`` (a zip file) is set.
    ``relpath`` is the path relative to the dataset root; the split rule hashes it.
    ``label`` is 0 for real, 1 for AI-generated, -1 when unknown (files given to ``detect``).
    ``paired``: the sample belongs to a paired dataset, whose split rule hashes :func:`pair_key`.
    """

    path: str
    relpath: str = ""
    label: int = -1
    generator: str = ""
    archive: str | None = None
    paired: bool = False

    @property
    def split(self) -> str:
        """This sample's public split (see :func:`split_of`; paired datasets keep pairs together)."""
        return split_of(pair_key(self.relpath) if self.paired else self.relpath)

    @property
    def display(self) -> str:
        """The name shown to users and written to result files."""
        return f"{self.archive}{ARCHIVE_SEPARATOR}{self.path}" if self.archive else self.path


def label_from_relpath(relpath: str) -> tuple[int, str] | None:
    """``real/**`` -> (0, "real"); ``fake/<generator>/**`` -> (1, generator); else None."""
    parts = relpath.split("/")
    top = parts[0].lower()
    if top == "real" and len(parts) >= 2:
        return 0, REAL
    if top == "fake" and len(parts) >= 3:
        return 1, parts[1]
    if top == "fake" and len(parts) == 2:
        return 1, "fake"  # fakes without a generator folder: detection only
    return None


def _is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _walk_files(root: str) -> Iterator[str]:
    """Every file below ``root``, depth first and sorted, streamed (no full listing in memory).

    Symlinked folders are not followed (no loops); a broken or looping file link is still
    yielded so that the reader reports it.
    """
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def _zip_members(archive: str) -> Iterator[zipfile.ZipInfo]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not info.is_dir() and not info.filename.startswith("__MACOSX/"):
                yield info


# ----------------------------------------------------------------------------- datasets


@dataclass
class ImageDataset:
    """A labelled dataset: a list of samples plus where they came from."""

    source: str
    samples: list[Sample]
    split: str = "all"
    skipped: list[str] = field(default_factory=list)  # files outside real/ and fake/<gen>/

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def generators(self) -> list[str]:
        """Generator names seen among the fakes, sorted."""
        return sorted({s.generator for s in self.samples if s.label == 1})

    def summary(self) -> dict:
        counts = Counter(s.generator for s in self.samples)
        return {
            "source": self.source,
            "split": self.split,
            "n_images": len(self.samples),
            "n_real": sum(1 for s in self.samples if s.label == 0),
            "n_fake": sum(1 for s in self.samples if s.label == 1),
            "per_source": dict(sorted(counts.items())),
        }

    def subset(self, max_images: int | None, seed: int = 0) -> "ImageDataset":
        """A fixed random subset of at most ``max_images`` samples (same seed, same subset)."""
        if not max_images or max_images >= len(self.samples):
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(self.samples), size=max_images, replace=False))
        return ImageDataset(self.source, [self.samples[i] for i in keep], self.split, self.skipped)


def _parse_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("0", "real", "camera", "false"):
        return 0
    if v in ("1", "fake", "ai", "generated", "ai-generated", "true"):
        return 1
    raise ValueError(f"{where}: label {value!r} is not one of 0/1/real/fake")


def _read_manifest(csv_path: str) -> Iterator[Sample]:
    base = os.path.dirname(os.path.abspath(csv_path))
    paired: dict[str, bool] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: a manifest needs a header with columns path,label[,generator]")
        for lineno, row in enumerate(reader, start=2):
            rel = (row["path"] or "").strip()
            label = _parse_label(row["label"] or "", f"{csv_path}:{lineno}")  # None: short row
            generator = (row.get("generator") or "").strip() or (REAL if label == 0 else "fake")
            if ARCHIVE_SEPARATOR in rel:  # "dataset::member": a member of a zip or of a dataset folder
                root, member = rel.split(ARCHIVE_SEPARATOR, 1)
                root = root if os.path.isabs(root) else os.path.join(base, root)
                # The member's own path is what the split rule hashes, as if the dataset were read whole.
                if root not in paired:
                    paired[root] = is_paired(root)
                if os.path.isdir(root):
                    yield Sample(path=os.path.join(root, member), relpath=member, label=label, generator=generator,
                                 paired=paired[root])
                else:
                    yield Sample(path=member, relpath=member, label=label, generator=generator, archive=root,
                                 paired=paired[root])
                continue
            full = rel if os.path.isabs(rel) else os.path.join(base, rel)
            yield Sample(path=full, relpath=rel, label=label, generator=generator)


def load_dataset(source: str | os.PathLike, split: str = "all") -> ImageDataset:
    """Read a dataset: a folder or ``.zip`` laid out ``real/**`` and ``fake/<generator>/**``,
    or a CSV manifest ``path,label[,generator]``. Keeps only the samples of ``split``."""
    check_split(split)
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"dataset not found: {source}")
    skipped: list[str] = []
    samples: list[Sample] = []

    paired = is_paired(source)

    def keep(sample: Sample) -> None:
        if paired:
            sample = replace(sample, paired=True)
        if split == "all" or sample.split == split:
            samples.append(sample)

    if source.lower().endswith(".csv"):
        for s in _read_manifest(source):
            keep(s)
    elif zipfile.is_zipfile(source):
        for info in _zip_members(source):
            labelled = label_from_relpath(info.filename)
            if labelled is None or not _is_image_name(info.filename):
                skipped.append(info.filename)
                continue
            keep(Sample(info.filename, info.filename, labelled[0], labelled[1], archive=source))
    elif os.path.isdir(source):
        for full in _walk_files(source):
            rel = os.path.relpath(full, source).replace(os.sep, "/")
            labelled = label_from_relpath(rel)
            if labelled is None or not _is_image_name(rel):
                skipped.append(rel)
                continue
            keep(Sample(full, rel, labelled[0], labelled[1]))
    else:
        raise ValueError(f"{source}: a dataset is a folder, a .zip or a .csv manifest")
    if not samples and split == "all":
        raise ValueError(f"{source}: no images found under real/ or fake/<generator>/")
    return ImageDataset(source, samples, split, skipped)


def load_datasets(sources: str | os.PathLike | list[str | os.PathLike], split: str | list[str] = "all") -> ImageDataset:
    """One or several datasets as one (each keeps its own relative paths for the split rule);
    ``split`` is one for all, or a list with one per source."""
    if isinstance(sources, (str, os.PathLike)):
        return load_dataset(sources, split if isinstance(split, str) else split[0])
    splits = [split] * len(sources) if isinstance(split, str) else list(split)
    parts = [load_dataset(s, part) for s, part in zip(sources, splits)]
    split = split if isinstance(split, str) else "+".join(dict.fromkeys(splits))
    return ImageDataset(" + ".join(p.source for p in parts), [x for p in parts for x in p.samples], split,
                        [x for p in parts for x in p.skipped])


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
            for full in _walk_files(p):
                rel = os.path.relpath(full, p).replace(os.sep, "/")
                if _is_image_name(rel):
                    label, gen = label_from_relpath(rel) or (-1, "")
                    yield Sample(full, rel, label, gen, paired=paired)
        elif p.lower().endswith(".zip") and zipfile.is_zipfile(p):
            paired = is_paired(p)
            for info in _zip_members(p):
                if _is_image_name(info.filename):
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


# ----------------------------------------------------------------------------- decoding

_heif_lock = threading.Lock()
_heif_registered: bool | None = None  # None: not tried yet


def register_heif_opener() -> bool:
    """Teach Pillow to open HEIC/HEIF (phone photos) with pillow-heif; True when it can.

    Done once, on the first ISO-BMFF file met (see :func:`is_isobmff`), so that importing
    aigi does not load libheif. AVIF needs no plugin here: Pillow (11.2+) decodes it itself.
    """
    global _heif_registered
    with _heif_lock:
        if _heif_registered is None:
            try:
                from pillow_heif import register_heif_opener as register
            except ImportError:
                _heif_registered = False
            else:
                register()
                _heif_registered = True
        return _heif_registered


def is_isobmff(data: bytes) -> bool:
    """HEIC, HEIF and AVIF files are ISO-BMFF boxes: a size, then ``ftyp``."""
    return data[4:8] == b"ftyp"


def open_encoded(data: bytes) -> Image.Image:
    """``Image.open`` on encoded bytes, registering the HEIF opener first when they need it."""
    if is_isobmff(data):
        register_heif_opener()
    return Image.open(io.BytesIO(data))



def _high_bit_depth_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit (I;16*) and 32-bit (I, F) greyscale -> 8-bit L, scaled rather than clipped."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or (im.mode == "I" and arr.size and arr.max() > 255):
        arr = arr / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparent pixels are composited onto white."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_bit_depth_to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def reduction_factor(width: int, height: int, min_size: int | None) -> int:
    """The largest of 1, 2, 4, 8 that keeps both sides of the image at least ``min_size``."""
    if not min_size:
        return 1
    ratio = min(width // min_size, height // min_size)
    return next((f for f in (8, 4, 2) if ratio >= f), 1)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS,
                 min_size: int | None = None) -> Image.Image:
    """Bytes -> upright 8-bit RGB image, or :class:`ImageDecodeError` with a clear reason.

    JPEG, PNG, WebP, GIF (first frame), BMP, TIFF, AVIF and HEIC/HEIF (with pillow-heif);
    EXIF orientation applied (HEIF's own rotation boxes are applied by libheif); the declared
    size is checked against ``max_pixels`` before any pixel is decoded.

    ``min_size``: the caller only needs both sides at least this large, so the image is
    shrunk by a factor of 2, 4 or 8 while it is decoded. JPEGs are decoded at that scale
    (libjpeg's DCT scaling, several times cheaper); every other format is decoded whole and
    box-reduced by the same factor, so the two formats reach the model through the same
    kind of filter and format alone is no signal.
    """
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        im = open_encoded(data)
        width, height = im.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                name,
                f"image is {width}x{height} ({width * height:,} pixels), over the "
                f"{max_pixels:,}-pixel decompression-bomb limit; refused before decoding",
            )
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/WebP/TIFF: score the first frame
        factor = reduction_factor(width, height, min_size)
        if factor > 1 and im.format in ("JPEG", "MPO"):
            im.draft(im.mode, (min_size, min_size))
            factor = 1
        im.load()
        im = to_rgb(ImageOps.exif_transpose(im) or im)
        return im.reduce(factor) if factor > 1 else im
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(name, f"decompression bomb refused: {e}") from None
    except Image.UnidentifiedImageError:
        if is_isobmff(data) and not register_heif_opener():
            raise ImageDecodeError(name, "HEIC/HEIF image, but pillow-heif is not installed (pip install pillow-heif)") from None
        raise ImageDecodeError(name, "not an image Pillow can identify (wrong extension or corrupt header)") from None
    except OSError as e:
        raise ImageDecodeError(name, f"corrupt or truncated image: {e}") from None
    except MemoryError:
        raise ImageDecodeError(name, "out of memory while decoding") from None
    except Exception as e:  # Pillow's plugins raise many types on malformed input
        raise ImageDecodeError(name, f"cannot decode ({type(e).__name__}: {e})") from None


def read_image(sample: Sample, min_size: int | None = None) -> Image.Image:
    """file -> image: read the bytes of ``sample`` and decode them (see :func:`decode_image`)."""
    return decode_image(read_bytes(sample), sample.display, min_size=min_size)


__all__ = [
    "DECODE_WORKERS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ImageDataset",
    "ImageDecodeError",
    "Sample",
    "decode_image",
    "is_isobmff",
    "iter_inputs",
    "label_from_relpath",
    "load_dataset",
    "load_datasets",
    "is_paired",
    "open_encoded",
    "pair_key",
    "read_bytes",
    "read_image",
    "reduction_factor",
    "register_heif_opener",
    "split_of",
    "to_rgb",
    "too_large",
]
