"""Calibration on held-out data: temperature scaling, thresholds, the uncertain band, unknown generators.

Everything here is derived from the validation split (never trained on) when a model is
trained, and stored in its config (``training.calibration``, ``uncertain_band``,
``open_set``) so that a threshold can be moved later without retraining: the band follows
(:func:`apply_operating_point`).

- **Uncertain band** (:func:`uncertain_band`): the narrowest p_fake interval around the
  threshold that holds half the held-out errors; a p_fake inside it is ``uncertain``.
- **Unknown generator** (:func:`open_set_threshold`): ``generator`` is ``unknown`` when the
  top generator's probability (``p_generator``) is under the value that 95% of held-out fakes
  of the trained generators reach.
"""

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


# ----------------------------------------------------------------------------- the uncertain band

UNCERTAIN_ERROR_SHARE = 0.5  # the share of held-out errors the uncertain band holds
BAND_RULE = ("the narrowest band [low, high] around the threshold that holds {share:.0%} of the held-out errors "
             "(reals at or above the threshold, fakes below it)")


def uncertain_band(val_real: np.ndarray, val_fake: np.ndarray, threshold: float,
                   error_share: float = UNCERTAIN_ERROR_SHARE) -> dict | None:
    """The uncertain band of p_fake, by the rule :data:`BAND_RULE`; None without held-out errors.

    Why this rule: it puts the abstentions exactly where the model was wrong on images it never
    trained on, and the price (the share of held-out images that land in the band, i.e. how
    often it abstains) is stored beside it. Errors far from the threshold (confidently wrong)
    cannot be caught by any narrow band; they are the errors left outside it.
    """
    real, fake = np.sort(np.asarray(val_real, np.float64)), np.sort(np.asarray(val_fake, np.float64))
    if not 0 < error_share <= 1:
        raise ValueError(f"error share must be in (0, 1], got {error_share}")
    fp = real[real >= threshold]  # ascending: the nearest false positive first
    fn = fake[fake < threshold][::-1]  # descending: the nearest false negative first
    n_errors = len(fp) + len(fn)
    if not n_errors:
        return None
    need = int(math.ceil(error_share * n_errors - 1e-9))
    best = None
    for k_fn in range(0, min(need, len(fn)) + 1):
        k_fp = need - k_fn
        if k_fp > len(fp):
            continue
        low = float(fn[k_fn - 1]) if k_fn else float(threshold)
        high = float(fp[k_fp - 1]) if k_fp else float(threshold)
        if best is None or high - low < best[1] - best[0]:
            best = (low, high)
    low, high = best
    everything = np.concatenate([real, fake])
    inside = (everything >= low) & (everything <= high)
    errors = np.concatenate([fp, fn])
    outside_real, outside_fake = real[(real < low) | (real > high)], fake[(fake < low) | (fake > high)]
    decided = len(outside_real) + len(outside_fake)
    correct = int((outside_real < threshold).sum() + (outside_fake >= threshold).sum())
    return {
        "low": round(low, 6), "high": round(high, 6), "threshold": float(threshold),
        "rule": BAND_RULE.format(share=error_share), "error_share": error_share,
        "n_val": int(len(everything)), "n_errors": int(n_errors),
        "errors_in_band": int(((errors >= low) & (errors <= high)).sum()),
        "val_share_in_band": round(float(inside.mean()), 6),
        "accuracy_outside_band": round(correct / decided, 6) if decided else None,
        "accuracy_at_threshold": round(1 - n_errors / len(everything), 6),
    }


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


# ----------------------------------------------------------------------------- operating points


def stored_calibration(config: dict) -> dict:
    return ((config.get("training") or {}).get("calibration") or {})


def set_decision_rules(config: dict, calibration: dict | None = None,
                       error_share: float = UNCERTAIN_ERROR_SHARE) -> None:
    """(Re)derive the uncertain band around ``config["threshold"]`` from the held-out
    distributions (``calibration``, default the stored ones); a model without them keeps no
    band (it decides as before)."""
    cal = calibration if calibration is not None else stored_calibration(config)
    real, fake = cal.get("val_real_p_fake"), cal.get("val_fake_p_fake")
    band = uncertain_band(real, fake, float(config["threshold"]), error_share) if real and fake else None
    if band is None:
        config.pop("uncertain_band", None)
    else:
        config["uncertain_band"] = band


def choose_threshold(config: dict, threshold: float | None = None, target_fpr: float | None = None,
                     model: str = "the model") -> float:
    """The threshold for ``--threshold P`` or ``--target-fpr F`` (from the stored held-out scores
    of real images; no retraining). ValueError, naming ``model``, when the model has none."""
    if threshold is not None and target_fpr is not None:
        raise ValueError("give --threshold or --target-fpr, not both")
    if threshold is not None:
        if not 0 < threshold < 1:
            raise ValueError(f"--threshold must be between 0 and 1, got {threshold:g}")
        return float(threshold)
    if not target_fpr or not 0 < target_fpr < 1:
        raise ValueError(f"--target-fpr must be between 0 and 1, got {target_fpr}")
    reals = stored_calibration(config).get("val_real_p_fake")
    if not reals:
        raise ValueError(f"{model} stores no held-out scores of real images (training.calibration.val_real_p_fake "
                         "in its config.json), so --target-fpr cannot choose a threshold; pass --threshold P, or "
                         "retrain it with this aigi")
    return threshold_for_fpr(np.asarray(reals), target_fpr)


def apply_operating_point(detector, threshold: float | None = None, target_fpr: float | None = None,
                          model: str = "the model") -> None:
    """Set a loaded detector's threshold (and re-derive its band) for this run; the files stay as they are."""
    if threshold is None and target_fpr is None:
        return
    detector.config["threshold"] = choose_threshold(detector.config, threshold, target_fpr, model)
    set_decision_rules(detector.config)
