"""The cross-source yardstick's figures: per held-out source, then the mean over sources.

A held-out *unit* is one source and one class (a source that gave both camera photos and
generator images counts twice). Each unit is judged against the other class pooled over all
held-out units of the same set:

- a generator source: its images against every held-out camera photo (AUC; TPR at 1% and 5%
  FPR of those photos; the share of its images at or above the stored threshold);
- a camera source: every held-out generator image against its photos (AUC; TPR of those fakes at
  the thresholds that flag 1% and 5% of *its* photos; the share of its photos flagged at the
  stored threshold: its real FPR).

The headline is the mean over units, not over images, so a source of 12 photos weighs as much
as one of 500. Each figure has a 95% interval: Wilson's for a share, a bootstrap over images (both
classes resampled) for an AUC. ECE is computed once per set with every unit weighing the same
(classes equal): the calibration a user sees on a population where no source dominates.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

ECE_BINS = 15
BOOTSTRAP = 200


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """P(a fake scores above a real), ties counted half."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake]))


def auc_interval(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = [auc(rng.choice(real, len(real)), rng.choice(fake, len(fake))) for _ in range(BOOTSTRAP)]
    return (round(float(np.quantile(values, 0.025)), 4), round(float(np.quantile(values, 0.975)), 4))


def tpr_at_fpr(real: np.ndarray, fake: np.ndarray, fpr: float) -> tuple[float, int]:
    """Share of fakes above the threshold that flags at most ``fpr`` of ``real`` (and how many fakes)."""
    threshold = np.quantile(real, 1 - fpr, method="higher")
    return float((fake > threshold).mean()), int(len(fake))


def weighted_ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with per-image weights (equal-width bins)."""
    w = w / w.sum()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            wb = w[m].sum()
            total += wb * abs(float((w[m] * p[m]).sum() / wb) - float((w[m] * y[m]).sum() / wb))
    return float(total)


def unit_of(row: dict) -> str:
    return f"{row['source']}:{'fake' if row['label'] == 1 else 'real'}"


def set_metrics(rows: list[dict], p_fake: np.ndarray, threshold: float) -> dict:
    """Every unit's figures, their means, and the set's pooled and source-balanced figures.
    ``rows``: dicts with ``source`` and ``label`` (0/1); ``p_fake``: one score per row (NaN: not
    scored, e.g. too small), in the same order."""
    p_fake = np.asarray(p_fake, np.float64)
    keep = ~np.isnan(p_fake)
    rows = [r for r, k in zip(rows, keep) if k]
    p = p_fake[keep]
    y = np.array([r["label"] for r in rows])
    units = np.array([unit_of(r) for r in rows])
    real_all, fake_all = p[y == 0], p[y == 1]
    per: dict[str, dict] = {}
    for unit in sorted(set(units)):
        mine = units == unit
        cls = int(y[mine][0])
        real, fake = (p[mine], fake_all) if cls == 0 else (real_all, p[mine])
        m: dict = {"class": "fake" if cls else "real", "n": int(mine.sum())}
        if len(real) and len(fake):
            m["auc"] = round(auc(real, fake), 4)
            m["auc_ci"] = auc_interval(real, fake)
            for name, fpr in (("tpr_at_1fpr", 0.01), ("tpr_at_5fpr", 0.05)):
                value, n = tpr_at_fpr(real, fake, fpr)
                m[name] = round(value, 4)
                m[name + "_ci"] = wilson(round(value * n), n)
        flagged = int((p[mine] >= threshold).sum())
        key = "fake_recall" if cls else "real_fpr"
        m[key] = round(flagged / m["n"], 4)
        m[key + "_ci"] = wilson(flagged, m["n"])
        per[unit] = m
    counts = defaultdict(int)
    for u in units:
        counts[u] += 1
    n_units = {c: sum(1 for u in counts if u.endswith(c)) for c in (":real", ":fake")}
    w = np.array([1.0 / (counts[u] * n_units[":fake" if yy else ":real"]) for u, yy in zip(units, y)])
    summary = {
        "units": len(per), "real_units": n_units[":real"], "fake_units": n_units[":fake"],
        "images": int(len(p)), "real_images": int((y == 0).sum()), "fake_images": int((y == 1).sum()),
        "pooled_auc": round(auc(real_all, fake_all), 4) if len(real_all) and len(fake_all) else None,
        "ece_balanced": round(weighted_ece(y, p, w), 4),
    }
    for key in ("auc", "tpr_at_1fpr", "tpr_at_5fpr"):
        values = [m[key] for m in per.values() if key in m]
        summary[key] = round(float(np.mean(values)), 4) if values else None
    for key, cls in (("real_fpr", "real"), ("fake_recall", "fake")):
        values = [m[key] for m in per.values() if m["class"] == cls]
        summary[key] = round(float(np.mean(values)), 4) if values else None
    return {"summary": summary, "units": per}


__all__ = ["auc", "set_metrics", "tpr_at_fpr", "unit_of", "weighted_ece", "wilson"]
