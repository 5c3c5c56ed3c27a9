"""Tests for aigi.evaluation: metrics on hand-built arrays, the report files, and an end-to-end run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from aigi.evaluation.calibration_maps import fit_calibration
from aigi.evaluation.evaluate import evaluate
from aigi.evaluation.metrics import (compute_metrics, expected_calibration_error, min_reals_for_fpr, reliability_bins, wilson_interval)
from aigi.evaluation.report import write_report

LABELS = ["real", "genA", "genB"]


def onehot(names: list[str], label_names: list[str] = LABELS) -> np.ndarray:
    out = np.full((len(names), len(label_names)), 0.01)
    for i, n in enumerate(names):
        out[i, label_names.index(n)] = 0.98
    return out


def contains_nan(obj) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(contains_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return any(contains_nan(v) for v in obj)
    return False


# ----------------------------------------------------------------------------- compute_metrics


def test_perfect_classifier():
    gens = ["real", "real", "genA", "genA", "genB", "genB"]
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.95])
    m = compute_metrics(y, p, np.array(gens, dtype=object), onehot(gens), LABELS, 0.5)
    assert m["n_images"] == 6 and m["n_errors"] == 0
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["real_accuracy"] == 1.0 and m["fake_accuracy"] == 1.0
    assert m["auc"] == 1.0 and m["ap"] == 1.0
    # Two reals cannot measure a 1%, 5% or 10% false-positive rate: undefined, with a note.
    assert m["tpr_at_fpr"] == {"0.01": None, "0.05": None, "0.1": None}
    assert "needs at least 100 real images" in m["tpr_at_fpr_notes"]["0.01"]
    assert m["per_generator"]["genA"] == {"n": 2, "recall": 1.0, "mean_p_fake": pytest.approx(0.85)}
    assert m["per_generator"]["real"]["false_positive_rate"] == 0.0
    att = m["attribution"]
    assert att["accuracy"] == 1.0 and att["macro_f1"] == 1.0
    assert att["labels"] == LABELS
    assert att["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert att["n_unseen_generator"] == 0


def test_known_confusion_and_rates():
    # 4 reals (one false alarm), 4 fakes (one missed); attribution: one genA called genB.
    gens = ["real"] * 4 + ["genA", "genA", "genB", "genB"]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.4, 0.8, 0.7])
    predicted = ["real", "real", "real", "real", "genA", "genB", "genB", "genB"]
    m = compute_metrics(y, p, gens, onehot(predicted), LABELS, 0.5, n_errors=2)
    assert m["n_images"] == 10 and m["n_errors"] == 2 and m["n_scored"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["real_accuracy"] == pytest.approx(3 / 4)
    assert m["fake_accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    # Pairs (fake, real) ranked correctly: 0.4 beats 3 of 4 reals, the others beat all -> 15/16.
    assert m["auc"] == pytest.approx(15 / 16)
    assert m["per_generator"]["genA"]["recall"] == 0.5
    assert m["per_generator"]["genB"]["recall"] == 1.0
    assert m["per_generator"]["real"] == {"n": 4, "false_positive_rate": 0.25, "mean_p_fake": pytest.approx(0.3)}
    att = m["attribution"]
    assert att["confusion"] == [[4, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert att["accuracy"] == pytest.approx(7 / 8)
    # F1: real 1, genA 2/3 (P 1, R 1/2), genB 0.8 (P 2/3, R 1).
    assert att["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)


def test_one_class_gives_null_ranking_metrics():
    gens = ["genA", "genA", "genB"]
    m = compute_metrics(np.ones(3, int), np.array([0.9, 0.2, 0.7]), gens, onehot(gens), LABELS, 0.5)
    assert m["auc"] is None and m["ap"] is None and m["roc_curve"] is None
    assert all(v is None for v in m["tpr_at_fpr"].values())
    assert m["real_accuracy"] is None
    assert m["fake_accuracy"] == pytest.approx(2 / 3)
    assert "real" not in m["per_generator"]
    assert not contains_nan(m)
    json.dumps(m, allow_nan=False)


def test_unseen_generator_counted_apart():
    gens = ["real", "genA", "genX", "genX"]
    y = np.array([0, 1, 1, 1])
    m = compute_metrics(y, np.array([0.1, 0.9, 0.8, 0.3]), gens, onehot(["real", "genA", "genB", "genA"]), LABELS, 0.5)
    att = m["attribution"]
    assert att["n_unseen_generator"] == 2 and att["unseen_generators"] == ["genX"]
    assert att["n"] == 2 and att["accuracy"] == 1.0
    assert sum(map(sum, att["confusion"])) == 2
    # Unseen generators are still measured for detection.
    assert m["per_generator"]["genX"] == {"n": 2, "recall": 0.5, "mean_p_fake": pytest.approx(0.55)}


def test_empty_and_ece():
    m = compute_metrics(np.zeros(0, int), np.zeros(0), [], np.zeros((0, 3)), LABELS, 0.5, n_errors=3)
    assert m["n_images"] == 3 and m["accuracy"] is None and m["ece"] is None
    assert not contains_nan(m)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
    assert expected_calibration_error(np.array([0, 0]), np.array([1.0, 1.0])) == 1.0
    # All at 0.7 with 70% fakes: perfectly calibrated.
    assert expected_calibration_error(np.array([1] * 7 + [0] * 3), np.full(10, 0.7)) == pytest.approx(0.0)


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="length"):
        compute_metrics(np.array([0, 1]), np.array([0.1]), ["real", "genA"], onehot(["real", "genA"]), LABELS, 0.5)
    with pytest.raises(ValueError, match="labels must be 0"):
        compute_metrics(np.array([-1]), np.array([0.1]), ["real"], onehot(["real"]), LABELS, 0.5)


# ----------------------------------------------------------------------------- write_report


def _some_metrics():
    rng = np.random.default_rng(0)
    gens = ["real"] * 30 + ["genA"] * 20 + ["genB"] * 20 + ["genZ"] * 5
    y = np.array([0 if g == "real" else 1 for g in gens])
    p = np.clip(y * 0.5 + rng.uniform(0, 0.6, len(y)), 0, 1)
    probs = rng.dirichlet(np.ones(3), len(y))
    m = compute_metrics(y, p, gens, probs, LABELS, 0.5, n_errors=1)
    m["errors"] = [{"path": "fake/genA/bad|name.jpg", "reason": "not an image"}]
    return m


def test_write_report_files(tmp_path):
    from aigi.detector.scoring import Prediction

    m = _some_metrics()
    preds = [Prediction("a.png", 0.9, "ai-generated", "genA", 0.8, {"real": 0.1}), Prediction("bad.jpg", error="corrupt")]
    report = write_report(m, tmp_path / "out", predictions=preds, title="test run")
    out = tmp_path / "out"
    assert report == out / "report.md"
    for name in ("metrics.json", "roc.png", "reliability.png", "confusion.png", "predictions.csv", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp*"))
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["auc"] == pytest.approx(m["auc"])
    assert loaded["attribution"]["n_unseen_generator"] == 5
    assert not contains_nan(loaded)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "p_fake", "verdict", "pixel_verdict", "generator", "p_generator", "evidence", "error", "note"]
    assert rows[1]["error"] == "corrupt" and rows[1]["p_fake"] == ""
    md = report.read_text()
    assert "# test run" in md and "](roc.png)" in md and "](confusion.png)" in md
    assert "genB" in md and "bad\\|name.jpg" in md
    with Image.open(out / "roc.png") as im:
        assert im.size[0] > 100


def test_write_report_one_class_skips_roc(tmp_path):
    gens = ["genA", "genB"]
    m = compute_metrics(np.ones(2, int), np.array([0.9, float("nan")]), gens, onehot(gens), LABELS, 0.5)
    m["weird"] = float("nan")  # a NaN slipped in by a caller still becomes null
    report = write_report(m, tmp_path)
    assert not (tmp_path / "roc.png").exists()
    assert (tmp_path / "confusion.png").exists() and not (tmp_path / "predictions.csv").exists()
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["auc"] is None and loaded["weird"] is None
    assert "ROC curve not drawn" in report.read_text()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(1)

    def img(path, size=(40, 36)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)

    for i in range(4):
        img(root / "real" / f"r{i}.png")
        img(root / "fake" / "genA" / f"a{i}.jpg")
        img(root / "fake" / "genB" / f"b{i}.png", size=(33, 50))
    (root / "fake" / "genA" / "bad.jpg").write_text("this is not an image")
    return root


def test_evaluate_end_to_end(tiny_dataset, tmp_path):
    import torch

    from aigi.detector.model import Detector
    from aigi.io.datasets import load_dataset

    torch.manual_seed(0)
    d = Detector.from_backbone("tiny-clip", ["genA", "genB"])
    ds = load_dataset(tiny_dataset)
    metrics, preds = evaluate(d, ds, batch_size=4, workers=2, progress=False)

    assert len(preds) == len(ds) == 13
    assert [p.path for p in preds] == [s.display for s in ds.samples]
    assert metrics["n_errors"] == 1 and metrics["n_images"] == 13 and metrics["n_scored"] == 12
    assert metrics["errors"][0]["path"].endswith("bad.jpg") and metrics["errors"][0]["reason"]
    assert metrics["model_threshold"] == d.threshold == metrics["threshold"]
    for key in ("accuracy", "balanced_accuracy", "real_accuracy", "fake_accuracy", "auc", "ap", "tpr_at_fpr", "ece", "per_generator", "attribution"):
        assert key in metrics, key
    assert metrics["auc"] is not None  # both classes present
    assert set(metrics["per_generator"]) == {"genA", "genB", "real"}
    assert metrics["per_generator"]["genA"]["n"] == 4
    assert metrics["attribution"]["labels"] == ["real", "genA", "genB"]
    assert sum(map(sum, metrics["attribution"]["confusion"])) == 12

    report = write_report(metrics, tmp_path / "report", predictions=preds)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n_errors"] == 1
    assert "bad.jpg" in report.read_text()


def test_evaluate_needs_labels(tiny_dataset):
    from aigi.detector.model import Detector
    from aigi.io.samples import Sample

    d = Detector.from_backbone("tiny-clip", ["genA"])
    with pytest.raises(ValueError, match="label"):
        evaluate(d, [Sample(str(tiny_dataset / "real" / "r0.png"))], progress=False)


# ----------------------------------------------------------------------------- uncertainty and calibration


def test_wilson_interval_known_values():
    low, high = wilson_interval(16, 16)
    assert low == pytest.approx(0.8063, abs=1e-4) and high == 1.0  # "100%" of 16 is at least 80.6%
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson_interval(0, 0) is None
    assert [min_reals_for_fpr(t) for t in (0.01, 0.05, 0.1)] == [100, 20, 10]


def test_tpr_at_fpr_needs_enough_reals():
    """16 reals, perfectly separated: the old report claimed "100% at 1% FPR"; now only the
    10% operating point (>= 10 reals) is measured, with an interval on its fakes."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 16 + [1] * 40)
    p = np.where(y == 1, rng.uniform(0.6, 1, len(y)), rng.uniform(0, 0.4, len(y)))
    gens = ["real"] * 16 + ["genA"] * 40
    m = compute_metrics(y, p, gens, onehot(gens), LABELS, 0.5)
    assert m["tpr_at_fpr"] == {"0.01": None, "0.05": None, "0.1": 1.0}
    assert "has 16" in m["tpr_at_fpr_notes"]["0.01"] and "needs at least 20" in m["tpr_at_fpr_notes"]["0.05"]
    iv = m["intervals"]
    assert iv["real_accuracy"]["n"] == 16 and iv["real_accuracy"]["ci95"][0] == pytest.approx(0.8063, abs=1e-4)
    assert iv["fake_accuracy"]["n"] == 40 and iv["accuracy"]["n"] == 56
    assert iv["fpr"]["value"] == 0.0 and iv["fpr"]["ci95"][1] == pytest.approx(0.1937, abs=1e-4)
    assert iv["tpr_at_fpr"]["0.01"] is None and iv["tpr_at_fpr"]["0.1"]["n"] == 40
    assert m["fpr"] == 0.0
    json.dumps(m, allow_nan=False)


def test_reliability_bins_match_ece():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < p).astype(int)
    bins = reliability_bins(y, p)
    assert sum(b["n"] for b in bins) == 500
    ece = sum(b["n"] / 500 * abs(b["fraction_fake"] - b["mean_p_fake"]) for b in bins)
    assert ece == pytest.approx(expected_calibration_error(y, p))
    assert all(b["low"] <= b["mean_p_fake"] <= b["high"] for b in bins)


def test_report_shows_intervals_reliability_and_undefined_tpr(tmp_path):
    m = _some_metrics()  # 30 reals: enough for 5% and 10% FPR (20, 10), not for 1% (100)
    assert m["tpr_at_fpr"]["0.01"] is None and m["tpr_at_fpr"]["0.05"] is not None
    md = write_report(m, tmp_path).read_text()
    assert "## Rates with 95% confidence intervals" in md and "| 30 reals |" in md
    assert "undefined" in md and "needs at least 100 real images" in md
    assert "](reliability.png)" in md and "## Calibration" in md
    assert (tmp_path / "reliability.png").stat().st_size > 0
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["tpr_at_fpr"]["0.01"] is None and loaded["reliability"] and loaded["intervals"]["accuracy"]["ci95"]


def test_fit_calibration_finds_the_overconfidence():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 2000)
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = 4.0 * true_logit  # an overconfident detector
    out = fit_calibration(logits, y)
    assert out["n"] == 2000 and out["n_folds"] == 5 and set(out["methods"]) == {"none", "temperature", "isotonic"}
    none, temp, iso = (out["methods"][k] for k in ("none", "temperature", "isotonic"))
    assert temp["temperature"] == pytest.approx(4.0, rel=0.15)
    assert temp["log_loss"] < none["log_loss"] and temp["ece"] < none["ece"]
    assert iso["log_loss"] < none["log_loss"]
    assert out["best"] in ("temperature", "isotonic") and out["criterion"] == "log_loss"
    # The isotonic map is returned as breakpoints to apply with numpy.interp.
    q = np.interp(logits, iso["x"], iso["y"])
    assert ((0 <= q) & (q <= 1)).all() and len(iso["x"]) == len(iso["y"])
    # Probabilities and logits are the same scores.
    same = fit_calibration(1 / (1 + np.exp(-logits)), y)
    assert same["methods"]["temperature"]["temperature"] == pytest.approx(temp["temperature"], rel=0.02)
    json.dumps(out, allow_nan=False)


def test_fit_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="at least 2 images of each class"):
        fit_calibration([0.1, 0.9, 0.8], [0, 1, 1])
    with pytest.raises(ValueError, match="length"):
        fit_calibration([0.1, 0.9], [0, 1, 1])
    small = fit_calibration([0.1, 0.2, 0.8, 0.9, 0.7], [0, 0, 1, 1, 1])
    assert small["n_folds"] == 2


def test_report_says_unreadable_files_and_unmatched_generator_names(tmp_path):
    """Issue 19: the headline's "errors" read as misclassifications, and a folder whose name is
    not a model label was called a generator "the model was not trained on"."""
    from aigi.evaluation.report import write_report

    gens = ["real", "real", "genA", "sd-1.5", "sd-1.5"]
    y = np.array([0, 0, 1, 1, 1])
    m = compute_metrics(y, np.array([0.1, 0.8, 0.9, 0.8, 0.3]), gens, onehot(["real", "genA", "genA", "genA", "genB"]),
                        LABELS, 0.5, n_errors=2)
    m["errors"] = [{"path": "a.jpg", "reason": "empty file (0 bytes)"}, {"path": "b.jpg", "reason": "truncated"}]
    text = write_report(m, tmp_path / "r").read_text()
    headline = text.split("## Headline", 1)[1].split("\n\n", 2)[1]
    header, _, values = headline.splitlines()[:3]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[-1] == "unreadable files" and "errors" not in columns
    assert values.strip("|").split("|")[-1].strip() == "2"
    assert "## Unreadable files" in text and "2 file(s) could not be read" in text
    assert "not among the model's generator names (`sd-1.5`)" in text and "another name" in text
    assert "not trained on" not in text
