"""Evaluation on a labelled dataset: detection and attribution metrics, and a report.

``evaluate(detector, dataset)`` scores every sample (reusing the streaming, parallel
decoding of :func:`aigi.predict.score_samples`), and :func:`compute_metrics` turns the
scores into one JSON-ready dict. :func:`write_report` writes that dict as ``metrics.json``
plus a ROC curve, a reliability diagram, an attribution confusion matrix, the per-file
predictions and a Markdown summary. Every rate carries the number of images it rests on and
a 95% Wilson interval, and a TPR "at 1% FPR" is undefined (null, with a note) until there
are enough reals to measure a 1% false-positive rate at all. :func:`fit_calibration`
compares temperature scaling and isotonic regression on held-out scores.

Every metric that cannot be defined on the data at hand (AUC with one class, the accuracy
on reals when there are none, ...) is ``None`` -- JSON ``null`` -- never NaN: NaN is not
valid JSON and silently poisons any average computed from it downstream.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .data import DECODE_WORKERS, REAL, ImageDataset, Sample

if TYPE_CHECKING:  # keep `import aigi.evaluate` cheap: torch comes in with the model only when used
    from .model import Detector, Prediction

# Operating points reported for "how many fakes are caught if we accept this many false alarms".
FPR_TARGETS = (0.01, 0.05, 0.1)
ECE_BINS = 15
MAX_ERRORS_LISTED = 100
# The ROC curve stored in metrics.json (and drawn in roc.png) is resampled onto at most this
# many points, so that the file stays small for datasets of any size.
MAX_ROC_POINTS = 512


# ----------------------------------------------------------------------------- helpers


def _clean(obj: Any) -> Any:
    """Recursively turn numpy values into Python ones, and NaN/inf into None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
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


def _rate(k: int, n: int) -> dict:
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
    return _clean(metrics)


def _intervals(y: np.ndarray, pred: np.ndarray, tpr_at_fpr: dict) -> dict:
    """Every headline rate with its count, its denominator and a 95% Wilson interval."""
    real, fake = y == 0, y == 1
    out = {
        "accuracy": _rate(int((pred == y).sum()), len(y)),
        "real_accuracy": _rate(int((pred[real] == 0).sum()), int(real.sum())),
        "fake_accuracy": _rate(int((pred[fake] == 1).sum()), int(fake.sum())),
        "fpr": _rate(int((pred[real] == 1).sum()), int(real.sum())),
        # Conditional on the threshold picked on these same images: the interval covers the
        # fakes' sampling only, not the choice of threshold.
        "tpr_at_fpr": {t: _rate(round(v * int(fake.sum())), int(fake.sum())) if v is not None else None
                       for t, v in tpr_at_fpr.items()},
    }
    return {k: v for k, v in out.items() if k == "tpr_at_fpr" or v["n"]}


def _attribution(true_source: np.ndarray, probs: np.ndarray, label_names: list[str], accuracy_score, f1_score, confusion_matrix) -> dict:
    """Source-head argmax vs true source, over images whose source the model knows."""
    # A generator the model never saw cannot be attributed correctly, so it would only measure
    # the training set's coverage; such images are counted apart instead of scored.
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


# ----------------------------------------------------------------------------- calibration

_EPS = 1e-6


def _log_loss(y: np.ndarray, q: np.ndarray) -> float:
    q = np.clip(q, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _as_logits(scores: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> logits; anything outside [0, 1] is taken to be logits already."""
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        return scores
    q = np.clip(scores, _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    # Minimise log-loss over log T: T stays positive and the search is one-dimensional.
    res = minimize_scalar(lambda log_t: _log_loss(y, 1 / (1 + np.exp(-logits / np.exp(log_t)))),
                          bounds=(math.log(0.01), math.log(100.0)), method="bounded")
    return float(np.exp(res.x))


def _fit_isotonic(logits: np.ndarray, y: np.ndarray):
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(logits, y)


def fit_calibration(p_or_logits: np.ndarray | Sequence[float], y: np.ndarray | Sequence[int],
                    n_splits: int = 5, seed: int = 0) -> dict:
    """Fit and compare calibration maps on held-out scores; no model needed.

    ``p_or_logits``: the detector's scores on labelled images it did not train on (p_fake in
    [0, 1], or raw logits); ``y``: 0 real / 1 fake. Each method -- ``none`` (the scores as
    they are), ``temperature`` (sigmoid(logit / T), one parameter) and ``isotonic`` (a
    monotone step function, scikit-learn) -- is fitted on k-1 folds and measured on the
    held-out fold (stratified k-fold, pooled), so a flexible method cannot win by memorising.
    Returns ``{"n", "n_folds", "methods": {name: {"ece", "log_loss", ...}}, "best"}``, with
    ``best`` the method of lowest cross-validated log-loss (a proper scoring rule; ECE alone
    rewards predicting the base rate), and each method fitted once more on all the data:
    ``temperature`` as ``T``, ``isotonic`` as breakpoints ``x`` (logits) and ``y`` (p_fake) to
    apply with ``numpy.interp``.
    """
    from sklearn.model_selection import StratifiedKFold

    logits = _as_logits(np.asarray(p_or_logits, dtype=np.float64).reshape(-1))
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(logits):
        raise ValueError(f"length mismatch: {len(logits)} scores, {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    smallest = int(min((y == 0).sum(), (y == 1).sum()))
    if smallest < 2:
        raise ValueError(f"calibration needs at least 2 images of each class, has {int((y == 0).sum())} real "
                         f"and {int((y == 1).sum())} fake")
    k = min(n_splits, smallest)
    held_out = {name: np.zeros_like(y) for name in ("none", "temperature", "isotonic")}
    for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(logits, y):
        lt, yt, lv = logits[train_idx], y[train_idx], logits[test_idx]
        held_out["none"][test_idx] = 1 / (1 + np.exp(-lv))
        held_out["temperature"][test_idx] = 1 / (1 + np.exp(-lv / _fit_temperature(lt, yt)))
        held_out["isotonic"][test_idx] = _fit_isotonic(lt, yt).predict(lv)
    methods = {name: {"ece": expected_calibration_error(y, q), "log_loss": _log_loss(y, q)} for name, q in held_out.items()}
    methods["temperature"]["temperature"] = _fit_temperature(logits, y)
    iso = _fit_isotonic(logits, y)
    methods["isotonic"]["x"] = iso.X_thresholds_.tolist()
    methods["isotonic"]["y"] = iso.y_thresholds_.tolist()
    best = min(methods, key=lambda m: (methods[m]["log_loss"], methods[m]["ece"]))
    return _clean({"n": int(len(y)), "n_folds": k, "methods": methods, "best": best, "criterion": "log_loss"})


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    detector: "Detector",
    samples_or_dataset: ImageDataset | Iterable[Sample],
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    autocast: bool = False,
    progress: bool = True,
    crops: int | None = None,
    evidence: bool = False,
) -> tuple[dict, list["Prediction"]]:
    """Score a labelled dataset and compute its metrics (of the pixel model: ``evidence``, off by
    default, only fills the predictions' evidence and final verdicts).

    Returns ``(metrics, predictions)``: the dict of :func:`compute_metrics` plus ``errors``
    (the first 100 unreadable files, ``{"path", "reason"}``) and ``model_threshold``, and one
    :class:`~aigi.model.Prediction` per sample in input order. Only samples labelled 0/1 count
    towards the metrics; unlabelled ones are scored and returned but not measured.
    """
    from tqdm.auto import tqdm

    from .predict import score_samples

    source = samples_or_dataset.source if isinstance(samples_or_dataset, ImageDataset) else None
    samples = list(samples_or_dataset.samples if isinstance(samples_or_dataset, ImageDataset) else samples_or_dataset)
    n_labelled = sum(1 for s in samples if s.label in (0, 1))
    if not n_labelled:
        # Fail before scoring: there is nothing to measure against.
        raise ValueError(
            f"none of the {len(samples)} images has a label: evaluation needs a dataset laid out "
            "real/** and fake/<generator>/**, or a CSV manifest with path,label[,generator]"
        )

    label_names = list(detector.labels)
    labels: list[int] = []
    p_fake: list[float] = []
    generators: list[str] = []
    source_probs: list[list[float]] = []
    predictions: list[Prediction] = []
    errors: list[dict] = []
    n_errors = 0  # labelled images that could not be read
    n_error_total = 0

    bar = tqdm(total=len(samples), unit="img", desc="evaluating", disable=not progress, dynamic_ncols=True)
    try:
        for sample, pred in score_samples(detector, samples, batch_size, workers, autocast, crops, evidence):
            predictions.append(pred)
            bar.update(1)
            if pred.error or pred.p_fake is None:
                n_error_total += 1
                n_errors += sample.label in (0, 1)
                if len(errors) < MAX_ERRORS_LISTED:
                    errors.append({"path": pred.path, "reason": pred.error or pred.note or "not scored"})
                continue
            if sample.label not in (0, 1):
                continue
            labels.append(int(sample.label))
            p_fake.append(float(pred.p_fake))
            generators.append(sample.generator or (REAL if sample.label == 0 else "fake"))
            source_probs.append([pred.generator_probs.get(name, 0.0) for name in label_names])
            if n_error_total:
                bar.set_postfix(errors=n_error_total, refresh=False)
    finally:
        bar.close()

    metrics = compute_metrics(
        np.asarray(labels, dtype=np.int64),
        np.asarray(p_fake, dtype=np.float64),
        np.asarray(generators, dtype=object),
        np.asarray(source_probs, dtype=np.float64).reshape(len(labels), len(label_names)),
        label_names,
        detector.threshold,
        n_errors=n_errors,
    )
    metrics["model_threshold"] = detector.threshold
    metrics["uncertain"] = abstention(np.asarray(labels), np.asarray(p_fake), detector.threshold,
                                      getattr(detector, "operating_point", None) and detector.operating_point.band)
    metrics["n_unlabelled"] = len(samples) - n_labelled
    metrics["n_errors_total"] = n_error_total  # unlabelled unreadable files included
    if source is not None:
        metrics["dataset"] = source
    metrics["errors"] = errors
    return _clean(metrics), predictions


def abstention(y: np.ndarray, p: np.ndarray, threshold: float, band: tuple[float, float] | None) -> dict | None:
    """What the uncertain band does here: how many images it holds, and the accuracy of the
    verdicts outside it (None for a model without a band)."""
    if band is None:
        return None
    y, p = np.asarray(y, np.int64), np.asarray(p, np.float64)
    inside = (p >= band[0]) & (p <= band[1])
    decided = ~inside
    correct = int(((p[decided] >= threshold).astype(np.int64) == y[decided]).sum())
    return {"band": [float(band[0]), float(band[1])], "in_band": _rate(int(inside.sum()), len(p)),
            "accuracy_outside_band": _rate(correct, int(decided.sum()))}


# ----------------------------------------------------------------------------- report


def _write_text(path: Path, text: str) -> None:
    # Write-then-rename: a crash never leaves a half-written file under the final name.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save_figure(fig, ax, path: Path, legend_loc: str) -> None:
    """The common end of every plot: legend, grid, tight layout, write."""
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _plot_roc(metrics: dict, path: Path, title: str) -> str | None:
    """Draw roc.png; returns a note instead when the curve is undefined."""
    roc = metrics.get("roc_curve")
    if not roc or not roc.get("fpr"):
        return "ROC curve not drawn: the evaluated images contain only one class (real or fake)."
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    try:
        auc = metrics.get("auc")
        ax.plot(roc["fpr"], roc["tpr"], lw=2, label=f"detector (AUC = {auc:.4f})" if auc is not None else "detector")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        for t, tpr in (metrics.get("tpr_at_fpr") or {}).items():
            if tpr is not None:
                ax.plot([float(t)], [tpr], "o", ms=4, color="black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (reals called AI-generated)")
        ax.set_ylabel("true positive rate (fakes caught)")
        ax.set_title(f"{title}: ROC", fontsize=10)
        _save_figure(fig, ax, path, "lower right")
    finally:
        plt.close(fig)
    return None


def _plot_reliability(metrics: dict, path: Path, title: str) -> str | None:
    """Draw reliability.png: observed fraction of fakes against mean p_fake per bin, counts shown."""
    bins = metrics.get("reliability") or []
    if not bins:
        return "Reliability diagram not drawn: no image was scored."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    try:
        x = [b["mean_p_fake"] for b in bins]
        y = [b["fraction_fake"] for b in bins]
        n = np.asarray([b["n"] for b in bins], dtype=np.float64)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
        ax.plot(x, y, "-", color="tab:blue", lw=1)
        ax.scatter(x, y, s=20 + 200 * n / n.max(), color="tab:blue", zorder=3, label="bins (area ~ images)")
        for xi, yi, ni in zip(x, y, n):
            ax.annotate(f"{int(ni)}", (xi, yi), textcoords="offset points", xytext=(3, 6 if yi < 0.5 else -11), fontsize=7)
        ece = metrics.get("ece")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel("mean p_fake in bin (numbers: images in the bin)")
        ax.set_ylabel("observed fraction of fakes")
        heading = f"{title}: reliability" + (f" (ECE {ece:.4f})" if ece is not None else "")
        ax.set_title(textwrap.fill(heading, 60), fontsize=9)  # long dataset names: wrap, do not cut
        _save_figure(fig, ax, path, "upper left")
    finally:
        plt.close(fig)
    return None


def _plot_confusion(metrics: dict, path: Path, title: str) -> str | None:
    """Draw confusion.png (rows true source, columns predicted, counts annotated)."""
    att = metrics.get("attribution") or {}
    names, cm = att.get("labels") or [], np.asarray(att.get("confusion") or [], dtype=np.int64)
    if not names or cm.size == 0:
        return "Confusion matrix not drawn: the model has no source labels."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    side = min(3 + 0.6 * k, 16)
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=120)
    try:
        # Colour by the row-normalised rate so that small classes are as readable as big ones.
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of row")
        ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
        ax.set_yticks(range(k), labels=names)
        ax.set_xlabel("predicted source")
        ax.set_ylabel("true source")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
        ax.set_title(f"{title}: attribution", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(rate: dict | None) -> str:
    """``[low-high%]`` of a :func:`_rate` dict, for report cells."""
    if not rate or rate.get("ci95") is None:
        return "n/a"
    low, high = rate["ci95"]
    return f"{100 * low:.1f}–{100 * high:.1f}%"


def _ci_of(value: float | None, n: int) -> str:
    return "n/a" if value is None or not n else _ci(_rate(round(value * n), n))


def _md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _rates_table(m: dict) -> list[str]:
    """Every headline rate with its 95% interval and the number of images behind it."""
    iv = m.get("intervals") or {}
    rows = [("accuracy", "accuracy", "scored images"), ("real_accuracy", "real accuracy (reals called real)", "reals"),
            ("fake_accuracy", "fake accuracy (fakes caught)", "fakes"),
            ("fpr", "false-positive rate (reals called AI-generated)", "reals")]
    lines = ["## Rates with 95% confidence intervals", "",
             "Wilson score intervals: how far each rate could move on another sample of the same size.", "",
             "| rate | value | 95% CI | images |", "|---|---:|---:|---:|"]
    for key, label, what in rows:
        r = iv.get(key)
        if r:
            lines.append(f"| {label} | {_pct(r['value'])} | {_ci(r)} | {r['n']} {what} |")
    notes = m.get("tpr_at_fpr_notes") or {}
    for t, r in (iv.get("tpr_at_fpr") or {}).items():
        label = f"fakes caught at {_pct(float(t))} FPR"
        if r:
            lines.append(f"| {label} | {_pct(r['value'])} | {_ci(r)} | {r['n']} fakes |")
        elif t in notes:
            lines.append(f"| {label} | undefined | | {_md(notes[t].removeprefix('undefined: '))} |")
    return lines + [""]


def _calibration_section(m: dict, note: str | None) -> list[str]:
    bins = m.get("reliability") or []
    lines = ["## Calibration", "",
             f"Expected calibration error (ECE, {ECE_BINS} equal-width bins of p_fake): {_num(m.get('ece'))}. "
             "A calibrated p_fake of 0.8 means that about 80% of such images are fakes.", ""]
    lines += [f"_{note}_" if note else "![Reliability diagram](reliability.png)", ""]
    if bins:
        lines += ["| p_fake bin | images | mean p_fake | fraction fake | 95% CI |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {b['low']:.2f}–{b['high']:.2f} | {b['n']} | {b['mean_p_fake']:.3f} | {b['fraction_fake']:.3f} "
                  f"| {_ci_of(b['fraction_fake'], b['n'])} |" for b in bins]
        lines.append("")
    return lines


def _markdown(metrics: dict, title: str, roc_note: str | None, cm_note: str | None, has_predictions: bool,
              reliability_note: str | None = None, worst_lines: list[str] | None = None) -> str:
    m = metrics
    lines = [f"# {title}", ""]
    if m.get("dataset"):
        lines += [f"Dataset: `{m['dataset']}`", ""]
    lines += [
        f"Threshold: p_fake >= {_num(m.get('threshold'), 3)} is called AI-generated.",
        "",
        "## Headline",
        "",
        "| accuracy | balanced acc. | real acc. | fake acc. | AUC | AP | ECE | images | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {_pct(m.get('accuracy'))} | {_pct(m.get('balanced_accuracy'))} | {_pct(m.get('real_accuracy'))} "
        f"| {_pct(m.get('fake_accuracy'))} | {_num(m.get('auc'))} | {_num(m.get('ap'))} | {_num(m.get('ece'))} "
        f"| {m.get('n_images', 0)} | {m.get('n_errors', 0)} |",
        "",
    ]
    tpr = {k: v for k, v in (m.get("tpr_at_fpr") or {}).items() if v is not None}
    if tpr:
        lines += [
            "Fakes caught at a fixed false-alarm rate on reals: "
            + ", ".join(f"{_pct(v)} at {_pct(float(k))} FPR" for k, v in tpr.items())
            + ".",
            "",
        ]
    for t, note in (m.get("tpr_at_fpr_notes") or {}).items():
        lines += [f"Fakes caught at {_pct(float(t))} FPR: {note}.", ""]
    lines += _rates_table(m)
    unc = m.get("uncertain")
    if unc:
        lines += ["## Uncertain band", "",
                  f"The model abstains (`uncertain`) for p_fake in [{unc['band'][0]:.3f}, {unc['band'][1]:.3f}] "
                  f"(chosen on its held-out data). Here {_pct(unc['in_band']['value'])} of the scored images "
                  f"({unc['in_band']['k']} of {unc['in_band']['n']}) fall in it; the verdicts outside it are "
                  f"{_pct(unc['accuracy_outside_band']['value'])} correct (95% CI {_ci(unc['accuracy_outside_band'])}, "
                  f"{unc['accuracy_outside_band']['n']} images). The rates above count every image at the threshold.",
                  ""]
    lines += _calibration_section(m, reliability_note)

    lines += ["## Per generator", "", "| source | images | detected as fake | 95% CI | mean p_fake |", "|---|---:|---:|---:|---:|"]
    for g, row in (m.get("per_generator") or {}).items():
        if g == REAL:
            continue
        lines.append(f"| {_md(g)} | {row['n']} | {_pct(row.get('recall'))} | {_ci_of(row.get('recall'), row['n'])} "
                     f"| {_num(row.get('mean_p_fake'), 3)} |")
    real = (m.get("per_generator") or {}).get(REAL)
    if real:
        lines.append(f"| real (false positives) | {real['n']} | {_pct(real.get('false_positive_rate'))} "
                     f"| {_ci_of(real.get('false_positive_rate'), real['n'])} | {_num(real.get('mean_p_fake'), 3)} |")
    lines.append("")

    att = m.get("attribution") or {}
    names, cm = att.get("labels") or [], att.get("confusion") or []
    lines += [
        "## Attribution",
        "",
        f"Which source the model names (source head, argmax), over {att.get('n', 0)} images from sources it knows: "
        f"accuracy {_pct(att.get('accuracy'))} (95% CI {_ci_of(att.get('accuracy'), att.get('n', 0))}), "
        f"macro F1 {_num(att.get('macro_f1'))}.",
        "",
    ]
    if att.get("n_unseen_generator"):
        unseen = ", ".join(f"`{g}`" for g in att.get("unseen_generators") or [])
        lines += [f"{att['n_unseen_generator']} images come from generators the model was not trained on ({unseen}) and are not scored here.", ""]
    if names and cm:
        lines += ["| true source | images | correctly attributed | 95% CI | most often confused with |", "|---|---:|---:|---:|---|"]
        for i, name in enumerate(names):
            row = cm[i]
            total = sum(row)
            if not total:
                continue
            others = [(c, names[j]) for j, c in enumerate(row) if j != i and c]
            confused = f"{max(others)[1]} ({max(others)[0]})" if others else "-"
            lines.append(f"| {_md(name)} | {total} | {_pct(row[i] / total)} | {_ci(_rate(row[i], total))} | {_md(confused)} |")
        lines.append("")

    lines += ["## Figures", ""]
    lines += [f"_{roc_note}_" if roc_note else "![ROC curve](roc.png)", ""]
    lines += [f"_{cm_note}_" if cm_note else "![Attribution confusion matrix](confusion.png)", ""]

    errors = m.get("errors") or []
    lines += ["## Errors", ""]
    if not errors:
        lines += ["Every image was read.", ""]
    else:
        total = m.get("n_errors_total", m.get("n_errors", len(errors)))
        lines += [f"{total} file(s) could not be read" + (f" (first {len(errors)} listed)" if total > len(errors) else "") + ":", ""]
        lines += [f"- `{_md(e.get('path'))}`: {_md(e.get('reason'))}" for e in errors]
        lines.append("")
    lines += worst_lines or []
    files = "[metrics.json](metrics.json)" + (", [predictions.csv](predictions.csv)" if has_predictions else "")
    lines += ["---", "", f"Files: {files}.", ""]
    return "\n".join(lines)


def write_report(
    metrics: dict,
    out_dir: str | os.PathLike,
    predictions: Sequence["Prediction"] | None = None,
    title: str = "aigi evaluation",
    samples: Sequence[Sample] | None = None,
    worst: int = 4,
) -> Path:
    """Write ``metrics.json``, ``roc.png``, ``reliability.png``, ``confusion.png``,
    ``predictions.csv`` (when ``predictions`` are given) and ``report.md`` into ``out_dir``;
    with ``samples`` (one per prediction, as :func:`evaluate` returns them), also the ``worst``
    false positives and false negatives with their heatmaps (``worst/*.png``). Returns the
    report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = _clean(metrics)
    # allow_nan=False: a NaN that slipped through is a bug to surface, not invalid JSON to ship.
    _write_text(out / "metrics.json", json.dumps(clean, indent=2, allow_nan=False) + "\n")

    roc_note = _plot_roc(clean, out / "roc.png", title)
    if roc_note and (out / "roc.png").exists():
        (out / "roc.png").unlink()  # a stale curve from an earlier run would contradict the note
    reliability_note = _plot_reliability(clean, out / "reliability.png", title)
    if reliability_note and (out / "reliability.png").exists():
        (out / "reliability.png").unlink()
    cm_note = _plot_confusion(clean, out / "confusion.png", title)

    if predictions is not None:
        from .predict import ResultWriter

        tmp = out / "predictions.tmp.csv"
        with ResultWriter(tmp) as writer:
            writer.write(predictions)
        os.replace(tmp, out / "predictions.csv")

    worst_lines = None
    if predictions is not None and samples is not None and worst > 0:
        worst_lines = _worst_mistakes(predictions, samples, clean.get("threshold", 0.5), out, worst)
    report = out / "report.md"
    _write_text(report, _markdown(clean, title, roc_note, cm_note, predictions is not None, reliability_note,
                                  worst_lines))
    return report


def worst_mistakes(predictions: Sequence["Prediction"], samples: Sequence[Sample], threshold: float,
                   n: int = 4) -> dict[str, list[tuple["Prediction", Sample]]]:
    """The ``n`` reals scored highest among those called AI-generated (false positives) and the
    ``n`` fakes scored lowest among those called real (false negatives), at ``threshold``."""
    pairs = [(p, s) for p, s in zip(predictions, samples) if p.p_fake is not None and s.label in (0, 1)]
    fp = sorted((x for x in pairs if x[1].label == 0 and x[0].p_fake >= threshold), key=lambda x: -x[0].p_fake)
    fn = sorted((x for x in pairs if x[1].label == 1 and x[0].p_fake < threshold), key=lambda x: x[0].p_fake)
    return {"false positives": fp[:n], "false negatives": fn[:n]}


def _worst_mistakes(predictions, samples, threshold: float, out: Path, n: int) -> list[str]:
    """The report's "Worst mistakes" section; heatmaps written to ``out/worst/``."""
    from .data import ImageDecodeError
    from .explain import save_heatmap
    from .inputs import decode_source

    folder = out / "worst"
    for old in folder.glob("*.png") if folder.exists() else ():
        old.unlink()  # the mistakes of an earlier run would be mislabelled
    lines = ["## Worst mistakes", "",
             f"The {n} reals with the highest p_fake among those called AI-generated, and the {n} fakes with the "
             "lowest among those called real; each crop's p_fake is drawn over the image.", ""]
    for kind, items in worst_mistakes(predictions, samples, threshold, n).items():
        lines += [f"### {kind.capitalize()}", ""]
        if not items:
            lines += [f"None at threshold {threshold:.3f}.", ""]
            continue
        lines += ["| # | image | source | p_fake | heatmap |", "|---:|---|---|---:|---|"]
        for i, (pred, sample) in enumerate(items, 1):
            name = f"{kind.replace(' ', '-')[:-1]}-{i}.png"  # false-positive-1.png
            try:
                save_heatmap(decode_source(sample), pred, folder / name, threshold=threshold)
                cell = f"![{name}](worst/{name})"
            except ImageDecodeError as e:  # changed since it was scored
                cell = f"not drawn: {_md(e.reason)}"
            lines.append(f"| {i} | `{_md(pred.path)}` | {_md(sample.generator or 'real')} | {pred.p_fake:.3f} | {cell} |")
        lines.append("")
    return lines
