"""Camera EXIF: Make, Model, Software, DateTimeOriginal / DateTime through Pillow's ``getexif``,
and the generator text some tools write into EXIF (A1111's UserComment, ComfyUI's WebP Make/Model).
"""

from __future__ import annotations

from typing import Any

from ..io.decode import open_encoded
from .containers import Metadata, decode_text

EXIF_FIELDS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x0132: "DateTime"}
EXIF_IFD, DATETIME_ORIGINAL, USER_COMMENT, IMAGE_DESCRIPTION = 0x8769, 0x9003, 0x9286, 0x010E


def _user_comment(raw: Any) -> str:
    """EXIF UserComment: an 8-byte charset code, then the text (A1111 writes UTF-16 here)."""
    if not isinstance(raw, (bytes, bytearray)):
        return decode_text(raw)
    code, body = bytes(raw[:8]), bytes(raw[8:])
    if code.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace").strip("\x00 ")
        # No byte-order mark: mostly-ASCII text has its zero bytes on the high side.
        big_endian = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big_endian else "utf-16-le", "replace").strip("\x00 ")
    return decode_text(body if code.startswith((b"ASCII", b"\x00" * 8)) else raw)


def read_exif(data: bytes, meta: Metadata) -> dict:
    """Camera fields via Pillow's getexif (IFD0 and the Exif IFD); generator text to ``meta``."""
    try:
        with open_encoded(data) as im:
            exif = im.getexif()
            meta.exif = meta.exif or bool(exif)
            meta.icc = meta.icc or bool(im.info.get("icc_profile"))
            if not meta.xmp and isinstance(im.info.get("xmp"), (bytes, str)):
                xmp = im.info["xmp"]
                meta.xmp = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
            ifd = exif.get_ifd(EXIF_IFD)
    except Exception as e:  # Pillow raises many types on damaged files
        if meta.format in ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF"):
            meta.problems.append(f"EXIF: cannot be read ({type(e).__name__}: {e})")
        return {}
    values = {name: decode_text(exif[tag]) for tag, name in EXIF_FIELDS.items() if tag in exif}
    values["DateTimeOriginal"] = decode_text(ifd.get(DATETIME_ORIGINAL, ""))
    if comment := _user_comment(ifd.get(USER_COMMENT, b"")):
        meta.texts.append(("UserComment", comment, "EXIF UserComment"))
    if description := decode_text(exif.get(IMAGE_DESCRIPTION, "")):
        meta.texts.append(("ImageDescription", description, "EXIF ImageDescription"))
    # ComfyUI's WebP saver puts its graphs into Make and Model ("workflow:{...}", "prompt:{...}"):
    # generator text, not a camera.
    for name in ("Make", "Model"):
        key, sep, graph = values.get(name, "").partition(":")
        if sep and key in ("workflow", "prompt") and graph.lstrip().startswith("{"):
            meta.texts.append((key, graph, f"EXIF {name}"))
            del values[name]
    return {name: value[:200] for name, value in values.items() if value}


__all__ = ["EXIF_FIELDS", "read_exif"]
