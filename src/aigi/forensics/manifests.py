"""C2PA manifests (Content Credentials), read offline with c2pa-python (the ``provenance`` extra):
whether the manifest validates, who signed it, the claim generator, and its actions with their
IPTC digital source types, in the active manifest and its ingredients'.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

from .containers import Metadata, excerpt
from .generators import AI_SOURCE_TYPES

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


def read_c2pa(data: bytes, meta: Metadata, trust_anchors: str | None) -> dict | None:
    # Every manifest store carries the JUMBF label "c2pa"; without it there is nothing to read,
    # and the native reader is not started at all.
    if not meta.jumbf and b"c2pa" not in data:
        return None
    try:
        import c2pa
    except ImportError:
        return {"error": "this file may hold a C2PA manifest, but c2pa-python is not installed (pip install 'aigi[provenance]')"}

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
        return {"error": f"a C2PA manifest is present but cannot be read ({excerpt(str(e), 200)})"}
    return summarise_manifest_store(store)


__all__ = ["read_c2pa", "summarise_manifest_store"]
