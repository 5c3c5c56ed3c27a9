"""Shortcut audit: can real and fake be told apart by how the files are stored, not by what
they show?

A detector learns whatever separates its two classes. When every fake is a 512x512 PNG
and every real a JPEG at quality 95, "PNG vs JPEG" is enough, and the model measured on
such data tells nothing about images. :func:`audit_dataset` reads only headers and metadata
(no pixel is decoded) and reports, per class and per source (generator folder, or the first
folder under ``real/``): formats, image sizes, JPEG quality (estimated from the
quantization tables against the standard IJG ones), chroma subsampling and which metadata
is present (EXIF, ICC profile, XMP, text chunks, C2PA/JUMBF). It then trains a classifier
on those properties alone, cross-validated with whole sources held out where the data
allows (so that it is honest: a property must carry over to sources it was not fitted
on), and warns when its ROC AUC reaches :data:`WARN_AUC`, naming the properties that
separate the classes.
"""

from __future__ import annotations

import sys
from collections import Counter
from statistics import median
from typing import Any

import numpy as np

from ..io.datasets import ImageDataset
from ..io.decode import open_encoded
from ..io.files import read_bytes
from ..io.samples import ImageDecodeError, Sample
from .containers import scan_metadata

WARN_AUC = 0.8  # a classifier on file properties alone at or above this AUC is a shortcut
TRAIN_AUDIT_IMAGES = 2000  # what `aigi train` audits before training (a few seconds)
FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF", "TIFF", "BMP")
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
METADATA = ("exif", "icc", "xmp", "text", "c2pa")
MAX_ERRORS_LISTED = 20

# The IJG (libjpeg) base tables, natural order, which "quality" scales (ITU T.81 Annex K).
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
_IJG_CHROMA = np.full(64, 99)
_IJG_CHROMA[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66]


def _ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (_IJG_LUMA, _IJG_CHROMA))


_IJG = {q: _ijg_tables(q) for q in range(1, 101)}


def jpeg_quality(quantization: dict) -> tuple[int, bool] | None:
    """(IJG quality 1-100 that best matches these tables, whether it matches exactly).

    Cameras and editors often use their own tables; then the nearest IJG quality is an
    estimate (``exact`` False), still comparable between classes.
    """
    tables = [np.asarray(quantization[k], dtype=np.int64) for k in sorted(quantization)[:2]]
    if not tables or any(t.size != 64 for t in tables):
        return None
    errors = {q: sum(int(np.abs(t - ref).sum()) for t, ref in zip(tables, refs)) for q, refs in _IJG.items()}
    best = min(errors, key=lambda q: (errors[q], -q))
    return best, errors[best] == 0


# ----------------------------------------------------------------------------- one file


def file_properties(data: bytes) -> dict:
    """What one file's header and metadata say (no pixels decoded); ``error`` when unreadable."""
    meta = scan_metadata(data)
    props: dict[str, Any] = {"format": meta.format or "unknown", "bytes": len(data), "width": None, "height": None,
                             "mode": "", "jpeg_quality": None, "jpeg_quality_exact": None, "subsampling": "n/a"}
    try:
        with open_encoded(data) as im:
            props["format"] = im.format or props["format"]
            props["width"], props["height"] = im.size
            props["mode"] = im.mode
            if im.format in ("JPEG", "MPO"):
                from PIL import JpegImagePlugin

                q = jpeg_quality(getattr(im, "quantization", None) or {})
                if q is not None:
                    props["jpeg_quality"], props["jpeg_quality_exact"] = q
                props["subsampling"] = SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other" if im.mode != "L" else "grey")
            info = im.info
            meta.exif = meta.exif or bool(info.get("exif"))
            meta.icc = meta.icc or bool(info.get("icc_profile"))
            meta.xmp = meta.xmp or ("xmp" if info.get("xmp") else "")
    except Exception as e:  # Pillow raises many types on damaged headers
        props["error"] = f"{type(e).__name__}: {e}"
    props.update({"exif": meta.exif, "icc": meta.icc, "xmp": bool(meta.xmp),
                  "text": bool(meta.texts), "c2pa": meta.jumbf})
    return props


def source_of(sample: Sample) -> str:
    """The generator folder of a fake; for a real, the first folder under ``real/`` (or "real")."""
    if sample.label == 1:
        return sample.generator or "fake"
    parts = sample.relpath.split("/")
    return parts[1] if len(parts) > 2 and parts[0].lower() == "real" else "real"


# ----------------------------------------------------------------------------- summaries


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    sizes = Counter(f"{r['width']}x{r['height']}" for r in rows)
    widths, heights = [r["width"] for r in rows], [r["height"] for r in rows]
    quality = Counter(("~" if not r["jpeg_quality_exact"] else "") + str(r["jpeg_quality"])
                      for r in rows if r["jpeg_quality"] is not None)
    return {
        "n": n,
        "formats": dict(Counter(r["format"] for r in rows).most_common()),
        "sizes": {
            "distinct": len(sizes),
            "most_common": [[s, c] for s, c in sizes.most_common(3)],
            "width": {"min": min(widths), "median": median(widths), "max": max(widths)},
            "height": {"min": min(heights), "median": median(heights), "max": max(heights)},
        },
        "jpeg_quality": dict(quality.most_common()),
        "subsampling": dict(Counter(r["subsampling"] for r in rows if r["subsampling"] != "n/a").most_common()),
        "metadata": {k: sum(bool(r[k]) for r in rows) / n for k in METADATA},
    }


# ----------------------------------------------------------------------------- the classifier


def _features(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    # How the file is stored, not what it shows: no pixel statistics (bytes per pixel, say,
    # follows the content's detail as much as the encoder).
    names = [f"format={f}" for f in FORMATS] + ["width", "height", "pixels", "aspect ratio", "square",
             "sides multiple of 64", "JPEG quality"] + [f"chroma={s}" for s in SUBSAMPLING.values()]
    names += [f"{k} present" for k in METADATA] + ["mode=RGBA/LA/P", "mode=L"]
    x = []
    for r in rows:
        w, h = r["width"], r["height"]
        x.append([r["format"] == f for f in FORMATS] + [
            w, h, w * h, w / h, w == h, w % 64 == 0 and h % 64 == 0, r["jpeg_quality"] or 0] + [r["subsampling"] == s for s in SUBSAMPLING.values()]
            + [bool(r[k]) for k in METADATA] + [r["mode"] in ("RGBA", "LA", "P", "PA"), r["mode"] == "L"])
    return np.asarray(x, dtype=np.float64), names


def _folds(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[list, str]:
    """Cross-validation folds: whole sources held out when each class has 2+ sources (and every
    training fold keeps both classes), else stratified folds of images."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    per_class = [len(set(groups[y == c])) for c in (0, 1)]
    if min(per_class) >= 2:
        k = min(5, min(per_class))
        folds = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups))
        if all(len(set(y[train])) == 2 for train, _ in folds):
            return folds, f"source ({k} folds, each holding out whole sources)"
    k = min(5, int(min((y == 0).sum(), (y == 1).sum())))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)), (
        f"image ({k} stratified folds; a class has one source, so sources cannot be held out)")


def _describe(name: str, x: np.ndarray, y: np.ndarray, rows: list[dict]) -> str:
    real, fake = x[y == 0], x[y == 1]
    family = {"format": "format", "chroma": "subsampling"}.get(name.split("=")[0])
    if family:  # "format: fakes WEBP 100%; reals JPEG 100%" says more than one one-hot column
        shares = [_cell(dict(Counter(r[family] for r, c in zip(rows, y) if c == k).most_common()), 2) for k in (1, 0)]
        return f"{name.split('=')[0]}: fakes {shares[0]}; reals {shares[1]}"
    if set(np.unique(x)) <= {0.0, 1.0}:
        return f"{name}: {100 * fake.mean():.0f}% of fakes, {100 * real.mean():.0f}% of reals"
    def common(v: np.ndarray) -> str:
        def shown(x: float) -> str:
            if name == "JPEG quality" and x == 0:
                return "not JPEG"
            return f"{int(x):,}" if float(x).is_integer() else f"{x:.3g}"

        return ", ".join(f"{shown(x)} ({100 * c / len(v):.0f}%)" for x, c in Counter(v.tolist()).most_common(2))

    return f"{name}: fakes {common(fake)}; reals {common(real)}"


def shortcut_classifier(rows: list[dict], y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """ROC AUC of a random forest on file properties alone (pooled out-of-fold scores), and
    the single properties that separate the classes best (each with its own AUC)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    if min((y == 0).sum(), (y == 1).sum()) < 2:
        return {"auc": None, "note": "needs at least 2 real and 2 fake images"}
    x, names = _features(rows)
    folds, grouped_by = _folds(y, groups, seed)
    scores = np.zeros(len(y))
    for train, test in folds:
        model = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=seed)
        scores[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    separating = []
    for j, name in enumerate(names):
        if np.ptp(x[:, j]) == 0:
            continue
        auc = float(roc_auc_score(y, x[:, j]))
        separating.append({"property": name, "auc": round(max(auc, 1 - auc), 4), "detail": _describe(name, x[:, j], y, rows)})
    separating.sort(key=lambda s: -s["auc"])
    # One line per property: format=WEBP and format=JPEG say the same thing twice.
    seen: set[str] = set()
    separating = [s for s in separating if not (s["property"].split("=")[0] in seen or seen.add(s["property"].split("=")[0]))]
    return {"auc": round(float(roc_auc_score(y, scores)), 4), "grouped_by": grouped_by, "n": int(len(y)),
            "features": names, "separating": separating[:8]}


def _warning(shortcut: dict) -> str | None:
    auc = shortcut.get("auc")
    if auc is None or auc < WARN_AUC:
        return None
    strong = [s["detail"] for s in shortcut["separating"] if s["auc"] >= 0.7][:3] or [s["detail"] for s in shortcut["separating"][:1]]
    return (f"WARNING: file properties alone separate real from fake (ROC AUC {auc:.3f}, cross-validated by "
            f"{shortcut['grouped_by'].split(' (')[0]}): a detector trained or scored on this data can learn how the "
            f"files are stored instead of what they show. Most separating: " + "; ".join(strong) + ". Re-encode both "
            "classes alike (same format, quality, chroma, size or crops; metadata stripped) before training or comparing.")


# ----------------------------------------------------------------------------- the audit


def audit_dataset(dataset: ImageDataset, max_images: int | None = None, seed: int = 0) -> dict:
    """The audit of a labelled dataset (JSON-ready): per-class and per-source summaries, the
    shortcut classifier's AUC, and ``warning`` (None when the properties do not separate).
    ``max_images`` audits a fixed random sample (``seed``) of a big dataset."""
    sample = dataset.subset(max_images, seed)
    rows, labels, groups, errors = [], [], [], []
    for s in sample.samples:
        if s.label not in (0, 1):
            continue
        try:
            props = file_properties(read_bytes(s))
        except ImageDecodeError as e:
            props = {"error": e.reason}
        if props.get("error") or not props.get("width"):
            if len(errors) < MAX_ERRORS_LISTED:
                errors.append({"path": s.display, "reason": props.get("error") or "no image size in the header"})
            continue
        rows.append(props)
        labels.append(s.label)
        groups.append(f"{'fake' if s.label else 'real'}/{source_of(s)}")
    y, g = np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=object)
    per_source = []
    for group in sorted(set(groups), key=lambda k: (k.split("/")[0] != "real", k)):
        sel = [r for r, k in zip(rows, groups) if k == group]
        cls, _, source = group.partition("/")
        per_source.append({"class": cls, "source": source, **_summary(sel)})
    classes = {name: _summary([r for r, lab in zip(rows, labels) if lab == c])
               for c, name in ((0, "real"), (1, "fake")) if c in labels}
    shortcut = shortcut_classifier(rows, y, g, seed)
    return {
        "dataset": dataset.source, "split": dataset.split, "n_images": len(dataset), "n_audited": len(rows),
        "n_errors": len(sample) - len(rows), "errors": errors, "seed": seed, "max_images": max_images,
        "classes": classes, "per_source": per_source, "shortcut": shortcut, "warning": _warning(shortcut),
    }


def _cell(counts: dict, limit: int = 3) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(counts.items())[:limit])


def format_audit(report: dict) -> str:
    """The audit as Markdown: a table per class and source, then the shortcut verdict."""
    lines = [f"# aigi audit: {report['dataset']} ({report['split']})", "",
             f"{report['n_audited']} of {report['n_images']} images audited"
             + (f" (a fixed sample, seed {report['seed']})" if report.get("max_images") else "")
             + (f", {report['n_errors']} unreadable" if report["n_errors"] else "") + ".", "",
             "| class | source | images | formats | most common sizes | JPEG quality | chroma | EXIF | ICC | XMP | text | C2PA |",
             "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|"]
    rows = [({"class": f"**{c}**", "source": "**all**"} | s) for c, s in report["classes"].items()] + report["per_source"]
    for r in rows:
        sizes = ", ".join(f"{s} ({c})" for s, c in r["sizes"]["most_common"])
        meta = " | ".join(f"{100 * r['metadata'][k]:.0f}%" for k in METADATA)
        lines.append(f"| {r['class']} | {r['source']} | {r['n']} | {_cell(r['formats'])} | {sizes} | "
                     f"{_cell(r['jpeg_quality'])} | {_cell(r['subsampling'])} | {meta} |")
    sc = report["shortcut"]
    lines += ["", "## Shortcut test", ""]
    if sc.get("auc") is None:
        lines += [f"Not measured: {sc.get('note')}.", ""]
    else:
        lines += [f"A random forest on these file properties alone (no pixels), cross-validated by {sc['grouped_by']}: "
                  f"ROC AUC **{sc['auc']:.3f}** for real vs fake (0.5 = no signal; warning at {WARN_AUC}).", "",
                  "Single properties, by how well each alone separates the classes (AUC):", ""]
        lines += [f"- {s['detail']} (AUC {s['auc']:.2f})" for s in sc["separating"][:5]]
        lines.append("")
    lines += [f"**{report['warning']}**" if report["warning"] else "No shortcut found: file properties do not separate the classes.", ""]
    if report["errors"]:
        lines += ["Unreadable files:", ""] + [f"- `{e['path']}`: {e['reason']}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def warn_if_shortcut(dataset: ImageDataset, max_images: int = TRAIN_AUDIT_IMAGES, seed: int = 0) -> float | None:
    """For ``aigi train``: audit a bounded sample, print the warning to stderr when the file
    properties separate the classes, and return the AUC (None when it cannot be measured).
    Never fails the caller: an audit that breaks only says so."""
    try:
        report = audit_dataset(dataset, max_images, seed)
    except Exception as e:  # the audit is advice; training goes on without it
        print(f"aigi train: shortcut audit skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    if report["warning"]:
        print(f"aigi train: {report['warning']} (run `aigi audit` for the table)", file=sys.stderr)
    return report["shortcut"].get("auc")


__all__ = ["WARN_AUC", "audit_dataset", "file_properties", "format_audit", "jpeg_quality", "source_of", "warn_if_shortcut"]
