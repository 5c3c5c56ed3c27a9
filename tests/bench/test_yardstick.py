"""benchmarks.yardstick: figures per held-out source, the mean over sources, and the report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: benchmarks/
from benchmarks.yardstick_metrics import set_metrics, weighted_ece, wilson  # noqa: E402
from benchmarks.yardstick_report import render  # noqa: E402


def _rows(spec):
    """[(source, label, [scores])] -> rows and scores in one order."""
    rows, scores = [], []
    for source, label, ps in spec:
        for p in ps:
            rows.append({"source": source, "label": label})
            scores.append(p)
    return rows, np.array(scores, np.float64)


def test_each_source_is_judged_against_the_other_class_pooled_and_means_are_over_sources():
    rows, p = _rows([
        ("cam-a", 0, [0.1, 0.2, 0.3, 0.9]),      # one photo flagged
        ("cam-b", 0, [0.1] * 10),                 # ten photos, none flagged
        ("gen-x", 1, [0.8, 0.95]),               # above every photo but cam-a's 0.9 for one
        ("gen-y", 1, [0.05, 0.15, 0.25, np.nan]),  # below nearly everything; one image not scored
    ])
    m = set_metrics(rows, p, threshold=0.5)
    units, s = m["units"], m["summary"]
    assert set(units) == {"cam-a:real", "cam-b:real", "gen-x:fake", "gen-y:fake"}
    assert units["cam-a:real"]["real_fpr"] == 0.25 and units["cam-b:real"]["real_fpr"] == 0.0
    assert s["real_fpr"] == pytest.approx(0.125)  # the mean over the two camera sources, not over 14 photos
    assert units["gen-x:fake"]["fake_recall"] == 1.0 and units["gen-y:fake"]["n"] == 3
    # gen-x against all 14 photos: 0.95 beats all, 0.8 beats 13 of 14.
    assert units["gen-x:fake"]["auc"] == pytest.approx((14 + 13) / 28, abs=1e-4)
    # cam-b's photos (all 0.1) against all five scored fakes: four fakes score above them.
    assert units["cam-b:real"]["auc"] == pytest.approx(4 / 5, abs=1e-4)
    assert s["units"] == 4 and s["images"] == 19 and s["auc"] == pytest.approx(np.mean([u["auc"] for u in units.values()]), abs=1e-3)
    lo, hi = units["cam-a:real"]["real_fpr_ci"]
    assert lo < 0.25 < hi


def test_balanced_ece_weighs_every_source_the_same():
    y = np.array([0] * 100 + [0] + [1])
    p = np.array([0.0] * 100 + [1.0] + [1.0])
    w_images = np.ones(len(y))
    w_sources = np.array([1 / 100] * 100 + [1.0] + [1.0])  # source A (100 good), source B (1 bad), one fake
    assert weighted_ece(y, p, w_images) < 0.02 < 0.3 < weighted_ece(y, p, w_sources)
    assert wilson(0, 0) is None and wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1]


def test_the_report_names_the_command_the_counts_and_every_recipe():
    rows, p = _rows([("cam", 0, [0.1, 0.6]), ("gen", 1, [0.7, 0.9])])
    sets = {"test": {"none": set_metrics(rows, p, 0.5), "reshare": set_metrics(rows, p * 0.9, 0.5)},
            "in-source": {"none": set_metrics(rows, p, 0.5)}}
    results = {"counts": {"train": {"images": 10, "sources": 3}, "test": {"images": 4, "sources": 2}},
               "recipes": {"default": {"what": "the new one", "sets": sets, "train_s": 12.0, "machine": "m", "date": "d"},
                           "plain-probe": {"what": "the floor", "sets": sets, "train_s": 3.0}}}
    text = render(results, ("none", "reshare"))
    assert "python -m benchmarks.yardstick run" in text and "test 4 images from 2 source-classes" in text
    assert "| **default** | 1.000 |" in text and "- **plain-probe**: the floor" in text
    assert "### Per test source: default" in text and "| cam | real | 2 |" in text
