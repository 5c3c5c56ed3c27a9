"""Decoding: encoded bytes -> an upright 8-bit RGB ``PIL.Image``, or a clear error.

:func:`decode_image` applies the EXIF orientation, converts every Pillow mode to RGB
(transparency onto white, 16-bit scaled), checks the declared size against the
decompression-bomb limit before a pixel is decoded, and opens HEIC/HEIF through pillow-heif,
registered on the first ISO-BMFF file met. Every failure is an
:class:`~aigi.io.samples.ImageDecodeError` naming the file and the reason.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from PIL import Image, ImageOps

from .files import read_bytes
from .samples import ImageDecodeError, Sample

# Pillow's own decompression-bomb limit (~89.5 megapixels); checked on the header, before decoding.
MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


# Decoding threads for scoring: half the cores, the rest for the model. On the 2-core
# benchmark machine that is one thread, the faster choice with torch for the default model
# and CLIP ViT-B/32 (BENCHMARKS.md, Throughput; use --workers 2 with --runtime onnx there).
DECODE_WORKERS: int = max(1, _usable_cpus() // 2)


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


__all__ = ["DECODE_WORKERS", "MAX_IMAGE_PIXELS", "decode_image", "is_isobmff", "open_encoded", "read_image",
           "reduction_factor", "register_heif_opener", "to_rgb"]
