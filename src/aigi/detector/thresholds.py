"""Thresholds and the uncertain band: how a model's scores become verdicts, and moving them.

Applied at inference as well as fitted at training: a model's config stores its threshold,
its uncertain band and the held-out validation scores they came from
(``training.calibration``), so ``--threshold P`` or ``--target-fpr F`` can move the threshold
of a loaded model without retraining, and the band follows (:func:`apply_operating_point`).

- **Threshold for an FPR** (:func:`threshold_for_fpr`): the smallest threshold that calls at most
  that share of held-out reals AI-generated.
- **Uncertain band** (:func:`uncertain_band`): the narrowest p_fake interval around the
  threshold that holds half the held-out errors; a p_fake inside it is ``uncertain``.

The rules that turn one image's scores into its verdict are :mod:`aigi.detector.scoring`'s
(:class:`~aigi.detector.scoring.OperatingPoint`, :func:`~aigi.detector.scoring.decide`).
"""

from __future__ import annotations

import math

import numpy as np


def threshold_for_fpr(p_fake_real: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most ``target_fpr`` of real images are called fake."""
    if len(p_fake_real) == 0:
        return 0.5
    return float(np.quantile(p_fake_real, 1 - target_fpr, method="higher") + 1e-9)


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


__all__ = ["BAND_RULE", "UNCERTAIN_ERROR_SHARE", "apply_operating_point", "choose_threshold", "set_decision_rules",
           "stored_calibration", "threshold_for_fpr", "uncertain_band"]
