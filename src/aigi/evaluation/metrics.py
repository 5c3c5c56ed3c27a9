"""Detection and attribution metrics on scored, labelled images, each with its count and interval.

:func:`compute_metrics` turns scores into one JSON-ready dict: accuracy, balanced accuracy,
real and fake accuracy, AUC, AP, TPR at fixed FPRs, ECE and reliability bins, per-generator
rates and attribution. Every rate carries the number of images it rests on and a 95% Wilson
interval, and a TPR "at 1% FPR" is undefined (null, with a note) until there are enough reals
to measure a 1% false-positive rate at all.

Every metric that cannot be defined on the data at hand (AUC with one class, the accuracy
on reals when there are none, ...) is ``None`` -- JSON ``null`` -- never NaN: NaN is not
valid JSON and silently poisons any average computed from it downstream (:func:`clean`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io.samples import REAL

# Operating points reported for "how many fakes are caught if we accept this many false alarms".
FPR_TARGETS = (0.01, 0.05, 0.1)
ECE_BINS = 15
# The ROC curve stored in metrics.json (and drawn in roc.png) is resampled onto at most this
# many points, so that the file stays small for datasets of any size.
MAX_ROC_POINTS = 512


# ----------------------------------------------------------------------------- helpers


def clean(obj: Any) -> Any:
    """Recursively turn numpy values into Python ones, and NaN/inf into None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _float(value: Any) -> float | None:
    """A finite Python float, or None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def expected_calibration_error(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = ECE_BINS) -> float | None:
    """ECE of ``p_fake`` as a probability of "fake": sum over equal-width bins of
    ``|fraction of fakes - mean p_fake|`` weighted by the bin's share of images."""
    labels = np.asarray(labels, dtype=np.float64)
    p = np.asarray(p_fake, dtype=np.float64)
    if p.size == 0:
        return None
    # Bin i holds (edge_i, edge_{i+1}]; p == 0 goes to the first bin.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = idx == b
        if in_bin.any():
            ece += in_bin.mean() * abs(labels[in_bin].mean() - p[in_bin].mean())
    return float(ece)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) for ``k`` successes in ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0/n and n/n:
    16 of 16 reals correct gives [0.806, 1.0], not "100%". None when ``n`` is 0.
    """
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict:
    """A rate with the number of images it rests on and its 95% Wilson interval."""
    ci = wilson_interval(k, n)
    return {"value": k / n if n else None, "k": int(k), "n": int(n),
            "ci95": None if ci is None else [round(ci[0], 6), round(ci[1], 6)]}


def min_reals_for_fpr(target: float) -> int:
    """Reals needed before a TPR "at FPR <= target" means anything: one false alarm among
    fewer than 1/target reals already exceeds the target, so the operating point is not
    measurable below that count."""
    return math.ceil(1 / target - 1e-9)


def reliability_bins(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of ``p_fake`` (those holding images): count, mean p_fake, fraction of fakes.
    The same bins as :func:`expected_calibration_error`; the data of reliability.png."""
    labels = np.asarray(labels, dtype=np.float64)
    p = np.asarray(p_fake, dtype=np.float64)
    finite = np.isfinite(p)  # a NaN score has no bin (and makes the ECE null)
    labels, p = labels[finite], p[finite]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(sel.sum()),
                         "mean_p_fake": float(p[sel].mean()), "fraction_fake": float(labels[sel].mean())})
    return bins


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float | np.ndarray) -> np.ndarray:
    """The best TPR reachable with FPR <= target, on the (non-decreasing) ROC points."""
    # The last ROC point with fpr <= target has the highest tpr among those points.
    idx = np.searchsorted(fpr, target, side="right") - 1
    return tpr[np.clip(idx, 0, len(tpr) - 1)]


def _compact_roc(fpr: np.ndarray, tpr: np.ndarray) -> dict:
    """The ROC curve, resampled onto a fixed FPR grid when it has too many points."""
    if len(fpr) > MAX_ROC_POINTS:
        # Log-spaced low-FPR points keep the detail that the 1%/5% operating points live in.
        grid = np.unique(
            np.concatenate([[0.0], np.geomspace(1e-4, 1.0, MAX_ROC_POINTS // 2), np.linspace(0.0, 1.0, MAX_ROC_POINTS // 2)])
        )
        fpr, tpr = grid, _tpr_at(fpr, tpr, grid)
    return {"fpr": [round(float(x), 6) for x in fpr], "tpr": [round(float(x), 6) for x in tpr]}


# ----------------------------------------------------------------------------- metrics


def compute_metrics(
    labels: np.ndarray,
    p_fake: np.ndarray,
    generators_true: np.ndarray | Sequence[str],
    source_probs: np.ndarray,
    label_names: Sequence[str],
    threshold: float,
    n_errors: int = 0,
) -> dict:
    """Detection and attribution metrics for the successfully scored, labelled images.

    ``labels`` are 0 (real) / 1 (fake); ``p_fake`` the detector's probabilities;
    ``generators_true`` the true source of each image ("real" or a generator name);
    ``source_probs`` the source head's probabilities, shape (N, len(label_names)), columns in
    ``label_names`` order; ``threshold`` the p_fake above which an image is called fake;
    ``n_errors`` the number of labelled images that could not be read (counted in
    ``n_images``, not in any rate). Undefined metrics are None, never NaN.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        recall_score,
        roc_auc_score,
        roc_curve,
    )

    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(p_fake, dtype=np.float64).reshape(-1)
    gens = np.asarray(generators_true, dtype=object).reshape(-1)
    label_names = [str(x) for x in label_names]
    probs = np.asarray(source_probs, dtype=np.float64).reshape(len(y), -1) if len(y) else np.zeros((0, len(label_names)))
    if not (len(y) == len(p) == len(gens) == len(probs)):
        raise ValueError(f"length mismatch: labels {len(y)}, p_fake {len(p)}, generators {len(gens)}, source_probs {len(probs)}")
    if len(y) and probs.shape[1] != len(label_names):
        raise ValueError(f"source_probs has {probs.shape[1]} columns but there are {len(label_names)} label names")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake); filter out unlabelled images first")

    threshold = float(threshold)
    pred = (p >= threshold).astype(np.int64)
    n = len(y)
    is_real, is_fake = y == 0, y == 1
    both_classes = bool(is_real.any() and is_fake.any())

    metrics: dict[str, Any] = {
        "n_images": n + int(n_errors),
        "n_scored": n,
        "n_errors": int(n_errors),
        "n_real": int(is_real.sum()),
        "n_fake": int(is_fake.sum()),
        "threshold": threshold,
        "accuracy": None,
        "balanced_accuracy": None,
        "real_accuracy": None,
        "fake_accuracy": None,
        "auc": None,
        "ap": None,
        "fpr": None,
        "tpr_at_fpr": {str(t): None for t in FPR_TARGETS},
        "tpr_at_fpr_notes": {},
        "ece": expected_calibration_error(y, p),
        "reliability": reliability_bins(y, p),
        "roc_curve": None,
    }
    if n:
        metrics["accuracy"] = float(accuracy_score(y, pred))
        with warnings.catch_warnings():
            # With one class present sklearn warns and averages the recall of that class only,
            # which is the meaningful number there (it equals the accuracy).
            warnings.simplefilter("ignore")
            metrics["balanced_accuracy"] = _float(balanced_accuracy_score(y, pred))
    if is_real.any():  # specificity: reals correctly called real
        metrics["real_accuracy"] = float(recall_score(y, pred, pos_label=0, labels=[0, 1], zero_division=0))
        metrics["fpr"] = 1.0 - metrics["real_accuracy"]
    if is_fake.any():  # recall on fakes
        metrics["fake_accuracy"] = float(recall_score(y, pred, pos_label=1, labels=[0, 1], zero_division=0))
    if both_classes:  # ranking metrics need both classes; with one they are undefined (None)
        metrics["auc"] = _float(roc_auc_score(y, p))
        metrics["ap"] = _float(average_precision_score(y, p))
        fpr, tpr, _ = roc_curve(y, p)
        n_real = int(is_real.sum())
        for t in FPR_TARGETS:
            if n_real >= min_reals_for_fpr(t):
                metrics["tpr_at_fpr"][str(t)] = float(_tpr_at(fpr, tpr, t))
            else:  # with 16 reals, "TPR at 1% FPR" would be the TPR at 0 false alarms out of 16
                metrics["tpr_at_fpr_notes"][str(t)] = (f"undefined: needs at least {min_reals_for_fpr(t)} real images "
                                                       f"to measure a {t:.0%} false-positive rate, has {n_real}")
        metrics["roc_curve"] = _compact_roc(fpr, tpr)
    metrics["intervals"] = _intervals(y, pred, metrics["tpr_at_fpr"])

    # Per source. Reals are grouped by label (whatever a manifest calls their source) and fakes by
    # generator name, so that a fake mislabelled "real" in a manifest cannot merge into the reals.
    true_source = np.where(is_real, REAL, np.where(gens == REAL, "fake", gens)).astype(object)
    per_generator: dict[str, dict] = {}
    for g in sorted({str(x) for x in true_source[is_fake]}):
        sel = true_source == g
        per_generator[g] = {
            "n": int(sel.sum()),
            "recall": float(pred[sel].mean()),
            "mean_p_fake": float(p[sel].mean()),
        }
    if is_real.any():
        per_generator[REAL] = {
            "n": int(is_real.sum()),
            "false_positive_rate": float(pred[is_real].mean()),
            "mean_p_fake": float(p[is_real].mean()),
        }
    metrics["per_generator"] = per_generator
    metrics["attribution"] = _attribution(true_source, probs, label_names, accuracy_score, f1_score, confusion_matrix)
    return clean(metrics)


def _intervals(y: np.ndarray, pred: np.ndarray, tpr_at_fpr: dict) -> dict:
    """Every headline rate with its count, its denominator and a 95% Wilson interval."""
    real, fake = y == 0, y == 1
    out = {
        "accuracy": rate(int((pred == y).sum()), len(y)),
        "real_accuracy": rate(int((pred[real] == 0).sum()), int(real.sum())),
        "fake_accuracy": rate(int((pred[fake] == 1).sum()), int(fake.sum())),
        "fpr": rate(int((pred[real] == 1).sum()), int(real.sum())),
        # Conditional on the threshold picked on these same images: the interval covers the
        # fakes' sampling only, not the choice of threshold.
        "tpr_at_fpr": {t: rate(round(v * int(fake.sum())), int(fake.sum())) if v is not None else None
                       for t, v in tpr_at_fpr.items()},
    }
    return {k: v for k, v in out.items() if k == "tpr_at_fpr" or v["n"]}


def _attribution(true_source: np.ndarray, probs: np.ndarray, label_names: list[str], accuracy_score, f1_score, confusion_matrix) -> dict:
    """Source-head argmax vs true source, over images whose source the model knows."""
    # A generator folder whose name is none of the model's labels cannot be attributed correctly
    # by name (the model may know it under another name, or not at all), so it would only
    # measure naming; such images are counted apart instead of scored. The keys keep their
    # first names ("unseen"), which stored model configs carry.
    known = np.isin(true_source, label_names)
    y_true = true_source[known].astype(str)
    result: dict[str, Any] = {
        "n": int(known.sum()),
        "n_unseen_generator": int((~known).sum()),
        "unseen_generators": sorted({str(g) for g in true_source[~known]}),
        "accuracy": None,
        "macro_f1": None,
        "labels": list(label_names),
        "confusion": [[0] * len(label_names) for _ in label_names],
    }
    if not len(y_true) or not label_names:
        return result
    y_pred = np.asarray(label_names, dtype=object)[np.argmax(probs[known], axis=1)].astype(str)
    result["accuracy"] = float(accuracy_score(y_true, y_pred))
    # Macro F1 over the sources present in the data: a class absent from the evaluation set
    # has no defined F1, and counting it as 0 would punish a small test set, not the model.
    present = [g for g in label_names if g in set(y_true)]
    result["macro_f1"] = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    result["confusion"] = confusion_matrix(y_true, y_pred, labels=label_names).tolist()
    return result


def abstention(y: np.ndarray, p: np.ndarray, threshold: float, band: tuple[float, float] | None) -> dict | None:
    """What the uncertain band does here: how many images it holds, and the accuracy of the
    verdicts outside it (None for a model without a band)."""
    if band is None:
        return None
    y, p = np.asarray(y, np.int64), np.asarray(p, np.float64)
    inside = (p >= band[0]) & (p <= band[1])
    decided = ~inside
    correct = int(((p[decided] >= threshold).astype(np.int64) == y[decided]).sum())
    return {"band": [float(band[0]), float(band[1])], "in_band": rate(int(inside.sum()), len(p)),
            "accuracy_outside_band": rate(correct, int(decided.sum()))}


__all__ = ["ECE_BINS", "FPR_TARGETS", "abstention", "clean", "compute_metrics", "expected_calibration_error",
           "min_reals_for_fpr", "rate", "reliability_bins", "wilson_interval"]
