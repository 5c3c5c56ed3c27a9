"""Calibration of p_fake on held-out data: temperature scaling, and thresholds for a target FPR."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model import Detector


def fit_temperature(p_fake: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising validation log-loss of sigmoid(logit / T) (grid search; robust)."""
    p = np.clip(p_fake, 1e-7, 1 - 1e-7)
    logits = np.log(p / (1 - p))
    best_t, best_loss = 1.0, math.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 200)):
        q = np.clip(1.0 / (1.0 + np.exp(-logits / t)), 1e-7, 1 - 1e-7)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t


def threshold_for_fpr(p_fake_real: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most ``target_fpr`` of real images are called fake."""
    if len(p_fake_real) == 0:
        return 0.5
    return float(np.quantile(p_fake_real, 1 - target_fpr, method="higher") + 1e-9)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def calibrate(detector: "Detector", p_fake: np.ndarray, y: np.ndarray, target_fpr: float | None = None) -> dict:
    """Fit the detector's temperature on held-out scores ``p_fake`` (made with its current
    temperature) and labels ``y``; with ``target_fpr``, also set the threshold that calls at most
    that share of the held-out reals fake. Returns what was done, for config.json."""
    p, y = np.asarray(p_fake, np.float64), np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        return {"method": "none", "reason": "validation split has one class"}
    factor = fit_temperature(p, y)  # the new temperature is the old one times this
    detector.config["temperature"] = detector.temperature * factor
    calibrated = 1.0 / (1.0 + np.exp(-logit(p) / factor))
    info: dict = {"method": "temperature", "temperature": detector.temperature, "n_val": int(len(y)),
                  "n_val_real": int((y == 0).sum()), "n_val_fake": int((y == 1).sum())}
    if target_fpr is not None:
        detector.config["threshold"] = threshold_for_fpr(calibrated[y == 0], target_fpr)
        info["target_fpr"] = target_fpr
    info["threshold"] = detector.threshold
    # The held-out score distributions, so that a threshold for another FPR can be chosen
    # later without retraining (aigi detect --target-fpr).
    info["val_real_p_fake"] = score_distribution(calibrated[y == 0])
    info["val_fake_p_fake"] = score_distribution(calibrated[y == 1])
    return info


def score_distribution(scores: np.ndarray, max_points: int = 2000) -> list[float]:
    """Sorted scores, or ``max_points`` evenly spaced quantiles of them (bounded config size)."""
    scores = np.sort(np.asarray(scores, np.float64))
    if len(scores) > max_points:
        scores = np.quantile(scores, np.linspace(0, 1, max_points))
    return np.round(scores, 6).tolist()
