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

Its parts: :mod:`~aigi.forensics.containers` (chunk walking), :mod:`~aigi.forensics.exif`,
:mod:`~aigi.forensics.generators` (generation parameters, XMP source types),
:mod:`~aigi.forensics.manifests` (C2PA); :mod:`~aigi.forensics.verdict` combines the result
with the pixel verdict. :func:`load_with_evidence` reads it beside the one input path, from
the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..io.inputs import ModelInput, Source, load_input, source_bytes, source_name
from ..io.preprocessing import Preprocessing
from .containers import excerpt, scan_metadata
from .exif import read_exif
from .generators import recognise_generator, xmp_source_types
from .manifests import read_c2pa

MAX_TEXTS = 32  # text entries kept per file


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
        ev.exif = read_exif(data, meta)
        ev.c2pa = read_c2pa(data, meta, trust_anchors)
        ev.digital_source_types = [{"type": t, "where": "XMP"} for t in xmp_source_types(meta.xmp)]
        ev.generator = recognise_generator(meta.texts)
    except Exception as e:  # never fail the caller: report it
        meta.problems.append(f"cannot read the metadata ({type(e).__name__}: {e})")
    ev.texts = [{"key": k, "where": w, "excerpt": excerpt(v)} for k, v, w in meta.texts[:MAX_TEXTS]]
    ev.problems = meta.problems
    if ev.empty:
        ev.reason = (f"no metadata could be read: {meta.problems[0]}" if meta.problems
                     else "no provenance metadata in the file (no C2PA manifest, XMP, text chunks or EXIF)")
    return ev


def load_with_evidence(source: Source, preprocessing: Preprocessing, crops: int | None = None, name: str | None = None,
                       evidence: bool = True) -> ModelInput:
    """:func:`aigi.io.inputs.load_input`, and with ``evidence`` also what the file's metadata says
    (:func:`read_evidence`, as ``ModelInput.evidence``), from the same bytes, read once; a PIL
    image has none. Raises :class:`~aigi.io.samples.ImageDecodeError`."""
    name = name or source_name(source)
    data = source_bytes(source, name)
    x = load_input(source, preprocessing, crops=crops, name=name, data=data)
    if evidence and data is not None:
        x.evidence = read_evidence(data, name).to_dict()
    return x


__all__ = ["Evidence", "load_with_evidence", "read_evidence"]
