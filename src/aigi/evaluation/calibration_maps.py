"""Which calibration map suits held-out scores: none, temperature scaling or isotonic regression.

:func:`fit_calibration` needs no model: it fits each map on k-1 folds of labelled scores and
measures it on the held-out fold (``aigi.training.calibration`` fits the temperature a model
ships with; this compares the choices).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .metrics import clean, expected_calibration_error

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
    return clean({"n": int(len(y)), "n_folds": k, "methods": methods, "best": best, "criterion": "log_loss"})


__all__ = ["fit_calibration"]
