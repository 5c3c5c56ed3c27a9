"""The combination rule: the pixel verdict and what the file says, made into the final verdict.

(:func:`combine`; also in the README, "Evidence beyond pixels".) The pixel model's ``p_fake`` is
never changed: it stays the model's calibrated probability, and the output shows the pixel
verdict and the evidence side by side. The final verdict is:

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

from .evidence import Evidence
from .generators import AI_SOURCE_TYPES, CAPTURE_SOURCE_TYPES

FAKE_VERDICT, REAL_VERDICT = "ai-generated", "real"  # the verdicts of aigi.detector.scoring, which imports them


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


# Where each tool's parameters name the model (aigi.forensics.generators' fields).
MODEL_FIELDS = ("Model", "checkpoint", "model_name", "model_weights")


def declared_generator(evidence: Evidence | dict | None) -> str:
    """The generator the file's own metadata names ("" when none): the model in the generation
    parameters, with the tool that wrote them (``flux1-dev.safetensors (ComfyUI)``), else the tool
    alone, else the software agent of a C2PA AI declaration (``Adobe Firefly (C2PA)``)."""
    ev = _as_dict(evidence)
    gen = ev.get("generator") or {}
    if gen.get("tool"):
        fields = gen.get("fields") or {}
        model = next((str(fields[k]) for k in MODEL_FIELDS if fields.get(k)), "")
        return f"{model} ({gen['tool']})" if model else str(gen["tool"])
    decl = (ev.get("c2pa") or {}).get("ai_declaration") or {}
    agent = str(decl.get("software_agent") or "").strip()
    return f"{agent} (C2PA)" if agent else ""


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


__all__ = ["FAKE_VERDICT", "REAL_VERDICT", "combine"]
