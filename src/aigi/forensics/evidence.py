"""Evidence beyond pixels: what an image file says about where it came from.

:func:`read_evidence` reads, from the encoded bytes and without decoding a pixel:

- a C2PA manifest (Content Credentials; via c2pa-python, the ``provenance`` extra): whether
  it validates, who signed it, the claim generator, and the actions with their IPTC digital
  source type (``trainedAlgorithmicMedia`` ...);
- the IPTC ``DigitalSourceType`` written in XMP packets (JPEG, PNG, WebP, HEIF/AVIF, ...);
- generation parameters that generators write into PNG text chunks, JPEG comments and EXIF
  user comments: AUTOMATIC1111 ``parameters``, ComfyUI ``prompt``/``workflow``, NovelAI,
  InvokeAI (the tool is named and a bounded excerpt kept);
- camera EXIF: Make, Model, Software, DateTimeOriginal / DateTime.

It never raises: a damaged chunk, a truncated file or bytes that are no image at all give a
result whose ``problems`` and ``reason`` say what was wrong.

The combination rule (:func:`combine`; also in the README, "Evidence beyond pixels")
---------------------------------------------------------------------------------
The pixel model's ``p_fake`` is never changed: it stays the model's calibrated probability,
and the output shows the pixel verdict and the evidence side by side. The final verdict is:

1. **ai-generated** when a C2PA manifest that validates (signature and content hashes check
   out: state ``Valid``, or ``Trusted`` when its certificate chains to a trust anchor)
   declares AI generation: digital source type ``trainedAlgorithmicMedia`` or
   ``compositeWithTrainedAlgorithmicMedia`` in a ``c2pa.created`` action (or in any other
   action: an AI edit such as generative fill), in the active manifest or an ingredient's.
2. **ai-generated** when generation parameters are found (A1111, ComfyUI, NovelAI, InvokeAI),
   or an XMP digital source type declares AI. Such metadata is written by the generator
   itself; it is easily stripped, but rarely forged to *claim* that an image is AI-made.
3. **ai-generated** when a C2PA manifest declares AI but does not validate (the file was
   changed after signing, or the signature is bad): read as an unsigned claim, like rule 2,
   and the reason says that it does not validate.
4. Otherwise the pixel verdict stands. Camera EXIF never changes it (anyone can write or copy
   Make/Model into a file), nor does a manifest claiming a camera capture; they are shown.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

FAKE_VERDICT, REAL_VERDICT = "ai-generated", "real"  # as aigi.model (not imported here: it loads torch)
EXCERPT_CHARS = 300  # longest excerpt of a text or of generation parameters kept in a result
MAX_TEXTS = 32  # text entries kept per file
MAX_TEXT_BYTES = 8 * 2**20  # a compressed text chunk is inflated to at most this (zip bombs)
IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
CAPTURE_SOURCE_TYPES = frozenset({"digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm"})
EXIF_FIELDS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x0132: "DateTime"}
EXIF_IFD, DATETIME_ORIGINAL, USER_COMMENT, IMAGE_DESCRIPTION = 0x8769, 0x9003, 0x9286, 0x010E


# ----------------------------------------------------------------------------- results


@dataclass
class Evidence:
    """What one file says about its origin (JSON-ready through :meth:`to_dict`).

    ``c2pa``: None when the file holds no manifest, else a dict (``validation_state``,
    ``validates``, ``trusted``, ``signer``, ``issuer``, ``claim_generator``, ``actions``,
    ``ai_declaration``, ``failures``; or ``error`` when a manifest is there but unreadable).
    ``digital_source_types``: IPTC codes found in XMP, ``[{"type", "where"}]``.
    ``generator``: the generation tool recognised in text metadata, ``{"tool", "where",
    "keys", "fields", "excerpt"}``, or None. ``exif``: camera fields present. ``texts``: every
    text entry (``{"key", "where", "excerpt"}``). ``problems``: damaged parts, never raised.
    ``reason``: why the result is empty (None when it is not).
    """

    name: str
    format: str | None = None
    c2pa: dict | None = None
    digital_source_types: list[dict] = field(default_factory=list)
    generator: dict | None = None
    exif: dict = field(default_factory=dict)
    texts: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.c2pa or self.digital_source_types or self.generator or self.exif or self.texts)

    def to_dict(self) -> dict:
        return {**asdict(self), "empty": self.empty}


@dataclass
class Metadata:
    """The metadata containers of one file, as its own chunk walkers find them (no pixels).

    Shared by :func:`read_evidence` and the shortcut audit (``aigi.audit``), which only needs
    to know which kinds are present.
    """

    format: str | None = None
    texts: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, where)
    xmp: str = ""
    exif: bool = False
    icc: bool = False
    jumbf: bool = False  # a JUMBF box (where C2PA manifests live)
    problems: list[str] = field(default_factory=list)


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
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
            meta.texts.append(("comment", _decode_text(payload), "JPEG comment"))
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


# ----------------------------------------------------------------------------- EXIF


def _decode_text(raw: Any) -> str:
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


def _user_comment(raw: Any) -> str:
    """EXIF UserComment: an 8-byte charset code, then the text (A1111 writes UTF-16 here)."""
    if not isinstance(raw, (bytes, bytearray)):
        return _decode_text(raw)
    code, body = bytes(raw[:8]), bytes(raw[8:])
    if code.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace").strip("\x00 ")
        # No byte-order mark: mostly-ASCII text has its zero bytes on the high side.
        big_endian = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big_endian else "utf-16-le", "replace").strip("\x00 ")
    return _decode_text(body if code.startswith((b"ASCII", b"\x00" * 8)) else raw)


def _read_exif(data: bytes, meta: Metadata) -> dict:
    """Camera fields via Pillow's getexif (IFD0 and the Exif IFD); generator text to ``meta``."""
    from .data import open_encoded

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
    values = {name: _decode_text(exif[tag]) for tag, name in EXIF_FIELDS.items() if tag in exif}
    values["DateTimeOriginal"] = _decode_text(ifd.get(DATETIME_ORIGINAL, ""))
    if comment := _user_comment(ifd.get(USER_COMMENT, b"")):
        meta.texts.append(("UserComment", comment, "EXIF UserComment"))
    if description := _decode_text(exif.get(IMAGE_DESCRIPTION, "")):
        meta.texts.append(("ImageDescription", description, "EXIF ImageDescription"))
    # ComfyUI's WebP saver puts its graphs into Make and Model ("workflow:{...}", "prompt:{...}"):
    # generator text, not a camera.
    for name in ("Make", "Model"):
        key, sep, graph = values.get(name, "").partition(":")
        if sep and key in ("workflow", "prompt") and graph.lstrip().startswith("{"):
            meta.texts.append((key, graph, f"EXIF {name}"))
            del values[name]
    return {name: value[:200] for name, value in values.items() if value}


# ----------------------------------------------------------------------------- XMP


_DST_URI = re.compile(r"digitalsourcetype/([A-Za-z]+)", re.IGNORECASE)
_DST_BARE = re.compile(r"DigitalSourceType\s*(?:=\s*[\"']|>)\s*([A-Za-z]+)\s*[\"'<]")


def xmp_source_types(xmp: str) -> list[str]:
    """IPTC digital source type codes named in an XMP packet, in order, once each."""
    found = [m.group(1) for m in _DST_URI.finditer(xmp)] + [m.group(1) for m in _DST_BARE.finditer(xmp)]
    return list(dict.fromkeys(found))


# ----------------------------------------------------------------------------- generators


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


_A1111_FIELD = re.compile(r"\s*([A-Za-z][\w ]*?):\s*(\"(?:[^\"\\]|\\.)*\"|[^,]*)(?:,|$)")
_A1111_KEEP = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "Version")


def _a1111_fields(text: str) -> dict | None:
    """The ``Steps: 20, Sampler: Euler a, ...`` line of A1111-style parameters, as a dict."""
    for line in reversed(text.splitlines()):
        if "Steps:" in line and ("Sampler:" in line or "Seed:" in line):
            fields = {k.strip(): v.strip().strip('"') for k, v in _A1111_FIELD.findall(line[line.index("Steps:"):])}
            return {k: fields[k] for k in _A1111_KEEP if k in fields}
    return None


def _comfy_fields(prompt: Any, workflow: Any) -> dict | None:
    nodes = [n for n in prompt.values() if isinstance(n, dict) and "class_type" in n] if isinstance(prompt, dict) else []
    graph = isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list)
    if not nodes and not graph:
        return None
    fields: dict[str, Any] = {"nodes": len(nodes) if nodes else len(workflow["nodes"])}
    for node in nodes:
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for src, dst in (("ckpt_name", "checkpoint"), ("unet_name", "checkpoint"), ("sampler_name", "sampler"),
                         ("steps", "steps"), ("seed", "seed")):
            if src in inputs and dst not in fields and not isinstance(inputs[src], list):
                fields[dst] = inputs[src]
    return fields


def _pick(obj: Any, *keys: str) -> dict:
    return {k: obj[k] for k in keys if isinstance(obj, dict) and obj.get(k) not in (None, "", [], {})}


def recognise_generator(texts: list[tuple[str, str, str]]) -> dict | None:
    """The generation tool whose parameters are in these ``(key, value, where)`` entries."""
    by_key = {k.lower(): (k, v, w) for k, v, w in texts}

    def hit(tool: str, keys: list[str], fields: dict | None) -> dict:
        found = [by_key[k.lower()] for k in keys if k.lower() in by_key]
        return {"tool": tool, "where": found[0][2], "keys": [k for k, _, _ in found], "fields": fields or {},
                "excerpt": _excerpt(found[0][1])}

    if "prompt" in by_key or "workflow" in by_key:
        fields = _comfy_fields(_json(by_key.get("prompt", ("", "", ""))[1]), _json(by_key.get("workflow", ("", "", ""))[1]))
        if fields is not None:
            return hit("ComfyUI", ["prompt", "workflow"], fields)
    software, source = by_key.get("software", ("", "", ""))[1], by_key.get("source", ("", "", ""))[1]
    if "novelai" in software.lower() or "novelai" in source.lower():
        comment = _json(by_key.get("comment", ("", "", ""))[1])
        return hit("NovelAI", ["Comment", "Software", "Source", "Description"],
                   _pick(comment, "steps", "sampler", "seed", "scale", "width", "height"))
    for key in ("invokeai_metadata", "sd-metadata", "Dream", "invokeai_graph"):
        if key.lower() in by_key:
            meta = _json(by_key[key.lower()][1])
            fields = _pick(meta, "model_name", "steps", "scheduler", "seed", "cfg_scale", "generation_mode", "app_version")
            if isinstance(meta, dict) and isinstance(meta.get("model"), dict):
                fields.setdefault("model_name", meta["model"].get("name"))
            if isinstance(meta, dict) and isinstance(meta.get("image"), dict):  # sd-metadata (InvokeAI 2.x)
                fields.update(_pick(meta["image"], "steps", "sampler", "seed", "cfg_scale"))
                fields.update(_pick(meta, "model_weights", "app_version"))
            return hit("InvokeAI", ["invokeai_metadata", "sd-metadata", "Dream", "invokeai_graph"], fields)
    for key, value, _where in texts:  # A1111 (and the UIs that write its format: Forge, SD.Next, ...)
        fields = _a1111_fields(value) if key.lower() in ("parameters", "usercomment", "comment", "imagedescription") else None
        if fields is not None:
            return hit("AUTOMATIC1111", [key], fields)
    return None


# ----------------------------------------------------------------------------- C2PA

_c2pa_lock = threading.Lock()
_c2pa_contexts: dict[str | None, Any] = {}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heif", "AVIF": "image/avif",
         "GIF": "image/gif", "TIFF": "image/tiff"}


def _c2pa_context(c2pa: Any, trust_anchors: str | None) -> Any:
    """One reader context per set of trust anchors, offline: no remote manifest, no OCSP."""
    with _c2pa_lock:
        if trust_anchors not in _c2pa_contexts:
            settings: dict = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
            if trust_anchors:
                settings["trust"] = {"trust_anchors": trust_anchors}
            _c2pa_contexts[trust_anchors] = c2pa.Context.from_dict(settings)
        return _c2pa_contexts[trust_anchors]


def _short_type(uri: Any) -> str:
    return str(uri).rsplit("/", 1)[-1] if uri else ""


def _agent(agent: Any) -> str:
    if isinstance(agent, dict):
        return " ".join(str(agent[k]) for k in ("name", "version") if agent.get(k))
    return str(agent or "")


def summarise_manifest_store(store: dict) -> dict:
    """The parts of a c2pa-python manifest store (``Reader.json()``) a person acts on."""
    active_label = store.get("active_manifest")
    manifests = store.get("manifests") or {}
    active = manifests.get(active_label) or {}
    state = store.get("validation_state") or ""
    statuses = store.get("validation_status") or []
    failures = [s.get("code", "") for s in statuses if isinstance(s, dict)]
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures += [s.get("code", "") for s in results.get("failure") or [] if isinstance(s, dict)]
    sig = active.get("signature_info") or {}
    generators = active.get("claim_generator_info") or []
    claim_generator = ", ".join(_agent(g) for g in generators if isinstance(g, dict)) or str(active.get("claim_generator") or "")
    actions, ai = [], None
    # The active manifest first, then its ingredients' (an edit of an AI image keeps the creation there).
    for label in [active_label] + [k for k in manifests if k != active_label]:
        for assertion in (manifests.get(label) or {}).get("assertions") or []:
            if not str(assertion.get("label", "")).startswith("c2pa.actions"):
                continue
            for act in (assertion.get("data") or {}).get("actions") or []:
                row = {"action": act.get("action", ""), "digital_source_type": _short_type(act.get("digitalSourceType")),
                       "software_agent": _agent(act.get("softwareAgent")), "manifest": "active" if label == active_label else "ingredient"}
                actions.append(row)
                # The first AI declaration, unless a later one is the creation itself.
                created = row["action"] == "c2pa.created"
                if row["digital_source_type"] in AI_SOURCE_TYPES and (ai is None or (created and ai["action"] != "c2pa.created")):
                    ai = row
    return {
        "validation_state": state,
        "validates": state in ("Valid", "Trusted"),
        "trusted": state == "Trusted",
        "signer": sig.get("common_name") or sig.get("issuer") or "",
        "issuer": sig.get("issuer") or "",
        "signed_at": sig.get("time") or "",
        "claim_generator": claim_generator,
        "title": active.get("title") or "",
        "actions": actions[:50],
        "ai_declaration": ai,
        "failures": sorted({f for f in failures if f and not f.endswith(".untrusted")}),
    }


def _read_c2pa(data: bytes, meta: Metadata, trust_anchors: str | None) -> dict | None:
    # Every manifest store carries the JUMBF label "c2pa"; without it there is nothing to read,
    # and the native reader is not started at all.
    if not meta.jumbf and b"c2pa" not in data:
        return None
    try:
        import c2pa
    except ImportError:
        return {"error": "this file may hold a C2PA manifest, but c2pa-python is not installed (pip install 'aigi[provenance]')"}
    import io

    try:
        reader = c2pa.Reader.try_create(_MIME.get(meta.format or "", "application/octet-stream"), io.BytesIO(data),
                                        None, _c2pa_context(c2pa, trust_anchors))
        if reader is None:
            return None
        with reader:
            store = json.loads(reader.json())
    except Exception as e:  # C2paError and its kin: a damaged or unsupported manifest
        if not meta.jumbf:
            return None  # the bytes "c2pa" were a coincidence: no manifest box was found
        return {"error": f"a C2PA manifest is present but cannot be read ({_excerpt(str(e), 200)})"}
    return summarise_manifest_store(store)


# ----------------------------------------------------------------------------- reading


def read_evidence(data: bytes, name: str = "<bytes>", trust_anchors: str | None = None) -> Evidence:
    """Everything the file says about its origin; never raises (see :class:`Evidence`).

    ``trust_anchors``: PEM root certificates whose C2PA signers count as trusted (state
    ``Trusted`` instead of ``Valid``); reading stays offline either way.
    """
    ev = Evidence(name=name)
    if not data:
        ev.reason = "empty file (0 bytes)"
        return ev
    meta = scan_metadata(data)
    ev.format = meta.format
    if meta.format is None:
        ev.reason = "not an image: the bytes start with no known image signature"
        return ev
    try:
        ev.exif = _read_exif(data, meta)
        ev.c2pa = _read_c2pa(data, meta, trust_anchors)
        ev.digital_source_types = [{"type": t, "where": "XMP"} for t in xmp_source_types(meta.xmp)]
        ev.generator = recognise_generator(meta.texts)
    except Exception as e:  # never fail the caller: report it
        meta.problems.append(f"cannot read the metadata ({type(e).__name__}: {e})")
    ev.texts = [{"key": k, "where": w, "excerpt": _excerpt(v)} for k, v, w in meta.texts[:MAX_TEXTS]]
    ev.problems = meta.problems
    if ev.empty:
        ev.reason = (f"no metadata could be read: {meta.problems[0]}" if meta.problems
                     else "no provenance metadata in the file (no C2PA manifest, XMP, text chunks or EXIF)")
    return ev


# ----------------------------------------------------------------------------- combining


def _as_dict(evidence: Evidence | dict | None) -> dict:
    if evidence is None:
        return {}
    return evidence.to_dict() if isinstance(evidence, Evidence) else evidence


def _pixels(verdict: str, p_fake: float | None) -> str:
    if not verdict or verdict == "error" or p_fake is None:
        return "no pixel verdict (the image was not scored)"
    return f"pixel model: {verdict} (p_fake {p_fake:.3f})"


def _declared(decl: dict) -> str:
    where = " in an ingredient's manifest" if decl.get("manifest") == "ingredient" else ""
    return f"{decl.get('action') or 'an action'} with digital source type {decl['digital_source_type']}{where}"


def combine(pixel_verdict: str, p_fake: float | None, evidence: Evidence | dict | None) -> tuple[str, str]:
    """(final verdict, reason) from the pixel model's verdict and the file's evidence.

    The rule is the module docstring's: a validating C2PA manifest declaring AI, then
    generator parameters or an XMP AI source type, then an AI claim in a manifest that does
    not validate, make it "ai-generated"; otherwise the pixel verdict stands, and camera EXIF
    or a capture claim is named in the reason but never used. ``p_fake`` is not changed.
    """
    ev = _as_dict(evidence)
    pixels = _pixels(pixel_verdict, p_fake)
    if pixel_verdict == FAKE_VERDICT:
        pixels += ", agrees"
    elif p_fake is not None and pixel_verdict:
        pixels += ", overridden"
    c2 = ev.get("c2pa") or {}
    decl = c2.get("ai_declaration")
    if decl and c2.get("validates"):
        signer = c2.get("signer") or "an unnamed signer"
        trust = "trusted" if c2.get("trusted") else "validates, signer not on a trust list"
        return FAKE_VERDICT, f"C2PA manifest signed by {signer} ({trust}) declares {_declared(decl)}; {pixels}"
    gen = ev.get("generator")
    if gen:
        keys = ", ".join(gen.get("keys") or [])
        return FAKE_VERDICT, (f"{gen.get('where')} '{keys}' holds {gen['tool']} generation parameters, which the generator "
                              f"writes itself (easily stripped, rarely forged to claim AI); {pixels}")
    ai_types = [d["type"] for d in ev.get("digital_source_types") or [] if d.get("type") in AI_SOURCE_TYPES]
    if ai_types:
        return FAKE_VERDICT, (f"XMP declares IPTC digital source type {ai_types[0]}, metadata written by the generating "
                              f"tool (easily stripped, rarely forged to claim AI); {pixels}")
    if decl:
        failed = ", ".join(c2.get("failures") or []) or c2.get("validation_state") or "not valid"
        return FAKE_VERDICT, (f"a C2PA manifest declares {_declared(decl)} but does not validate ({failed}): read as an "
                              f"unsigned claim of AI generation, rarely forged; {pixels}")
    notes = [_pixels(pixel_verdict, p_fake).replace("pixel model: ", "pixel verdict stands: ")]
    if c2.get("error"):
        notes.append(c2["error"])
    elif c2 and not c2.get("validates"):
        notes.append(f"C2PA manifest does not validate ({', '.join(c2.get('failures') or []) or c2.get('validation_state')})")
    capture = [a["digital_source_type"] for a in c2.get("actions") or [] if a.get("digital_source_type") in CAPTURE_SOURCE_TYPES]
    capture += [d["type"] for d in ev.get("digital_source_types") or [] if d.get("type") in CAPTURE_SOURCE_TYPES]
    if capture:
        notes.append(f"a capture claim ({capture[0]}) is shown, not used: anyone can sign or write one")
    exif = ev.get("exif") or {}
    if exif.get("Make") or exif.get("Model"):
        camera = " ".join(dict.fromkeys(x for x in (exif.get("Make"), exif.get("Model")) if x))
        notes.append(f"camera EXIF ({camera}) is shown, not used: EXIF is trivially forged or copied")
    return pixel_verdict, "; ".join(notes)


__all__ = [
    "AI_SOURCE_TYPES",
    "Evidence",
    "Metadata",
    "combine",
    "read_evidence",
    "recognise_generator",
    "scan_metadata",
    "sniff_format",
    "summarise_manifest_store",
    "xmp_source_types",
]
