"""Calibration fitted on held-out data at training: temperature scaling, thresholds, unknown generators.

Everything here is derived from the validation split (never trained on) when a model is
trained, and stored in its config (``training.calibration``, ``uncertain_band``,
``open_set``) so that a threshold can be moved later without retraining: the band follows
(:func:`aigi.detector.thresholds.apply_operating_point`).

- **Uncertain band** (:func:`aigi.detector.thresholds.uncertain_band`): the narrowest p_fake
  interval around the threshold that holds half the held-out errors; a p_fake inside it is
  ``uncertain``. It is derived again whenever the threshold moves, at inference too, so it
  lives with the thresholds in :mod:`aigi.detector.thresholds`.
- **Unknown generator** (:func:`open_set_threshold`): ``generator`` is ``unknown`` when the
  top generator's probability (``p_generator``) is under the value that 95% of held-out fakes
  of the trained generators reach.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..detector.thresholds import set_decision_rules, threshold_for_fpr

if TYPE_CHECKING:
    from ..detector.model import Detector


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


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def calibrate(detector: "Detector", p_fake: np.ndarray, y: np.ndarray, target_fpr: float | None = None,
              generator_probs: np.ndarray | None = None) -> dict:
    """Fit the detector's temperature on held-out scores ``p_fake`` (made with its current
    temperature) and labels ``y``; with ``target_fpr``, also set the threshold that calls at most
    that share of the held-out reals fake. Then the uncertain band around the threshold and,
    with ``generator_probs`` (the source head's probabilities, one row per score), the open-set
    threshold. Returns what was done, for config.json."""
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
    set_decision_rules(detector.config, info)
    info["uncertain_band"] = detector.config.get("uncertain_band")
    if generator_probs is not None and len(detector.labels) > 2:  # one generator: nothing to attribute
        p_gen = generator_confidence(np.asarray(generator_probs, np.float64))[y == 1]
        info["val_fake_p_generator"] = score_distribution(p_gen)
        detector.config["open_set"] = open_set_threshold(p_gen)
    return info


def score_distribution(scores: np.ndarray, max_points: int = 2000) -> list[float]:
    """Sorted scores, or ``max_points`` evenly spaced quantiles of them (bounded config size)."""
    scores = np.sort(np.asarray(scores, np.float64))
    if len(scores) > max_points:
        scores = np.quantile(scores, np.linspace(0, 1, max_points))
    return np.round(scores, 6).tolist()


# ----------------------------------------------------------------------------- unknown generators

OPEN_SET_KNOWN_KEPT = 0.95  # held-out fakes of trained generators that keep their name
OPEN_SET_RULE = ("generator is 'unknown' when p_generator (the top generator's probability, given AI-generated) is "
                 "below the threshold: the {miss:.0%} quantile of p_generator over held-out fakes of the trained "
                 "generators, so {kept:.0%} of those keep their name")


def generator_confidence(generator_probs: np.ndarray) -> np.ndarray:
    """p_generator of each row of source probabilities (columns: real, then the generators):
    the top generator's probability renormalised over the generators (given AI-generated)."""
    probs = np.asarray(generator_probs, np.float64).reshape(len(generator_probs), -1)[:, 1:]
    return probs.max(axis=1) / np.maximum(probs.sum(axis=1), 1e-12)


def open_set_threshold(val_fake_p_generator: np.ndarray, known_kept: float = OPEN_SET_KNOWN_KEPT) -> dict | None:
    """The open-set rule's threshold (:data:`OPEN_SET_RULE`) from held-out fakes' p_generator."""
    scores = np.asarray(val_fake_p_generator, np.float64)
    if not len(scores):
        return None
    return {"score": "p_generator", "threshold": round(float(np.quantile(scores, 1 - known_kept, method="lower")), 6),
            "known_kept": known_kept, "n_val_fakes": int(len(scores)),
            "rule": OPEN_SET_RULE.format(miss=1 - known_kept, kept=known_kept)}


__all__ = ["OPEN_SET_KNOWN_KEPT", "OPEN_SET_RULE", "calibrate", "fit_temperature", "generator_confidence", "logit",
           "open_set_threshold", "score_distribution"]
