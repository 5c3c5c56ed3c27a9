"""What generators write about themselves: generation parameters in text metadata (AUTOMATIC1111
``parameters``, ComfyUI ``prompt``/``workflow``, NovelAI, InvokeAI) and the IPTC digital source
type in XMP packets (``trainedAlgorithmicMedia`` ...).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .containers import excerpt

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
CAPTURE_SOURCE_TYPES = frozenset({"digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm"})


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
                "excerpt": excerpt(found[0][1])}

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


__all__ = ["AI_SOURCE_TYPES", "CAPTURE_SOURCE_TYPES", "IPTC_PREFIX", "recognise_generator", "xmp_source_types"]
