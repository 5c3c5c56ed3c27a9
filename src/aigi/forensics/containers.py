"""Container walking: a file's own chunks (JPEG segments, PNG chunks, WebP RIFF chunks) read for
text, XMP, EXIF, ICC and JUMBF (where C2PA manifests live), without decoding a pixel.

:func:`scan_metadata` never raises: a damaged chunk or a truncated file is a line in
``Metadata.problems``. It is shared by :func:`aigi.forensics.evidence.read_evidence` and the
shortcut audit (:mod:`aigi.forensics.audit`), which only needs to know which kinds are present.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

EXCERPT_CHARS = 300  # longest excerpt of a text or of generation parameters kept in a result
MAX_TEXT_BYTES = 8 * 2**20  # a compressed text chunk is inflated to at most this (zip bombs)


@dataclass
class Metadata:
    """The metadata containers of one file, as its own chunk walkers find them (no pixels).

    Shared by :func:`aigi.forensics.evidence.read_evidence` and the shortcut audit
    (:mod:`aigi.forensics.audit`), which only needs to know which kinds are present.
    """

    format: str | None = None
    texts: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, where)
    xmp: str = ""
    exif: bool = False
    icc: bool = False
    jumbf: bool = False  # a JUMBF box (where C2PA manifests live)
    problems: list[str] = field(default_factory=list)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.replace("\x00", " ").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- containers


def sniff_format(data: bytes) -> str | None:
    """The container format from the first bytes, or None for bytes that are no image."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brands = data[8:12] + data[16 : min(len(data), 64)]
        return "AVIF" if b"avif" in brands or b"avis" in brands else "HEIF"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    return None


def _inflate(payload: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(payload, MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"inflates to more than {MAX_TEXT_BYTES // 2**20} MB")
    return out


def _walk_png(data: bytes, meta: Metadata) -> None:
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        name = ctype.decode("latin-1")
        end = pos + 12 + length
        meta.jumbf = meta.jumbf or ctype == b"caBX"  # C2PA's chunk: known even when cut short
        if end > len(data):
            meta.problems.append(f"PNG: the file ends inside chunk '{name}' at offset {pos} (truncated)")
            return
        body = data[pos + 8 : pos + 8 + length]
        if ctype in (b"tEXt", b"zTXt", b"iTXt") and zlib.crc32(ctype + body) != int.from_bytes(data[end - 4 : end], "big"):
            meta.problems.append(f"PNG: chunk '{name}' at offset {pos} fails its CRC check (damaged); read anyway")
        try:
            _png_chunk(ctype, body, meta)
        except (ValueError, zlib.error, UnicodeDecodeError) as e:
            meta.problems.append(f"PNG: chunk '{name}' at offset {pos} cannot be read ({e})")
        if ctype == b"IEND":
            return
        pos = end
    meta.problems.append("PNG: the file ends before its IEND chunk (truncated)")


def _png_chunk(ctype: bytes, body: bytes, meta: Metadata) -> None:
    if ctype == b"tEXt":
        key, _, value = body.partition(b"\x00")
        meta.texts.append((key.decode("latin-1"), value.decode("latin-1"), "PNG tEXt"))
    elif ctype == b"zTXt":
        key, _, rest = body.partition(b"\x00")
        meta.texts.append((key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1"), "PNG zTXt"))
    elif ctype == b"iTXt":
        key, _, rest = body.partition(b"\x00")
        if len(rest) < 2:
            raise ValueError("iTXt chunk too short")
        compressed = rest[0] == 1
        _lang, _, rest = rest[2:].partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        value = (_inflate(text) if compressed else text).decode("utf-8")
        if key == b"XML:com.adobe.xmp":
            meta.xmp += value
        else:
            meta.texts.append((key.decode("latin-1"), value, "PNG iTXt"))
    elif ctype == b"eXIf":
        meta.exif = True
    elif ctype == b"iCCP":
        meta.icc = True


_XMP_NS = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXT_NS = b"http://ns.adobe.com/xmp/extension/\x00"


def _walk_jpeg(data: bytes, meta: Metadata) -> None:
    pos, extended = 2, []
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            meta.problems.append(f"JPEG: no marker at offset {pos} (damaged)")
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            break
        if pos + 4 > len(data):
            meta.problems.append(f"JPEG: the file ends inside the marker at offset {pos} (truncated)")
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        meta.jumbf = meta.jumbf or marker == 0xEB  # APP11: JUMBF, where C2PA manifests live in JPEG
        if length < 2 or pos + 2 + length > len(data):
            meta.problems.append(f"JPEG: segment 0x{marker:02X} at offset {pos} runs past the end of the file (truncated)")
            break
        if marker == 0xDA:  # start of scan: the metadata segments are all before it
            break
        payload = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            meta.exif = True
        elif marker == 0xE1 and payload.startswith(_XMP_NS):
            meta.xmp += payload[len(_XMP_NS) :].decode("utf-8", "replace")
        elif marker == 0xE1 and payload.startswith(_XMP_EXT_NS) and len(payload) >= len(_XMP_EXT_NS) + 40:
            head = len(_XMP_EXT_NS) + 32  # then 4 bytes full length, 4 bytes offset
            extended.append((int.from_bytes(payload[head + 4 : head + 8], "big"), payload[head + 8 :]))
        elif marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
            meta.icc = True
        elif marker == 0xFE:
            meta.texts.append(("comment", decode_text(payload), "JPEG comment"))
        pos += 2 + length
    else:
        meta.problems.append("JPEG: the file ends before its image data (truncated)")
    if extended:
        meta.xmp += b"".join(part for _, part in sorted(extended)).decode("utf-8", "replace")


def _walk_webp(data: bytes, meta: Metadata) -> None:
    pos = 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + size > len(data):
            meta.problems.append(f"WebP: the file ends inside chunk '{fourcc.decode('latin-1')}' at offset {pos} (truncated)")
            return
        body = data[pos + 8 : pos + 8 + size]
        if fourcc == b"XMP ":
            meta.xmp += body.decode("utf-8", "replace")
        elif fourcc == b"EXIF":
            meta.exif = True
        elif fourcc == b"ICCP":
            meta.icc = True
        elif fourcc == b"C2PA":
            meta.jumbf = True
        pos += 8 + size + (size & 1)  # chunks are padded to an even size


def _raw_xmp(data: bytes) -> str:
    """An XMP packet anywhere in the bytes (HEIF/AVIF items, TIFF tags, GIF extensions)."""
    start = data.find(b"<x:xmpmeta")
    end = data.find(b"</x:xmpmeta>", start)
    return data[start : end + 12].decode("utf-8", "replace") if start >= 0 and end > start else ""


def scan_metadata(data: bytes) -> Metadata:
    """Walk the file's own chunks (JPEG segments, PNG chunks, WebP RIFF chunks) for text,
    XMP, EXIF, ICC and JUMBF; other formats through Pillow's ``info``. Never raises."""
    meta = Metadata(format=sniff_format(data))
    walk = {"PNG": _walk_png, "JPEG": _walk_jpeg, "WEBP": _walk_webp}.get(meta.format or "")
    try:
        if walk is not None:
            walk(data, meta)
    except Exception as e:  # a walker bug must not cost the caller the file
        meta.problems.append(f"{meta.format}: cannot walk the file ({type(e).__name__}: {e})")
    if meta.format and walk is None:
        meta.xmp = _raw_xmp(data)
    return meta


def decode_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw.strip("\x00 ").strip()
    if not isinstance(raw, (bytes, bytearray)):
        return str(raw)
    raw = bytes(raw)
    for enc in ("utf-8", "latin-1"):
        try:
            return raw.decode(enc).strip("\x00 ").strip()
        except UnicodeDecodeError:
            continue
    return ""


__all__ = ["EXCERPT_CHARS", "Metadata", "decode_text", "excerpt", "scan_metadata", "sniff_format"]
