"""benchmarks/generalization.py: the fold rule, the perturbations and the metrics (the folds themselves take hours)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmarks package at the repository root

from benchmarks.generalization import PERTURBATIONS, fold_metrics, fold_rows, perturb, real_bins  # noqa: E402


def _rows():
    rows = [dict(path=f"f{i}", label=1, family=fam, group="") for i, fam in enumerate(["a", "a", "b", "aligned"])]
    rows += [dict(path=f"r{i}", label=0, family="real", group=g) for i, g in enumerate(["canon"] * 3 + ["sony"] * 2 + ["bsds"])]
    rows[3]["group"] = "sony"  # an aligned fake goes where its real photo goes
    return rows


def test_a_fold_holds_out_one_family_and_one_real_bin_and_their_aligned_fakes():
    rows = _rows()
    bins = real_bins(rows, 2)
    assert sorted(sum(bins, [])) == ["bsds", "canon", "sony"] and bins[0] == ["canon"]  # largest first
    train, held = fold_rows(rows, "a", bins[1])
    assert {r["path"] for r in held} == {"f0", "f1", "r3", "r4", "r5"}
    assert {r["path"] for r in train} == {"f2", "r0", "r1", "r2"}  # f3: aligned fake of a held-out group
    assert not {r["path"] for r in train} & {r["path"] for r in held}


def test_every_perturbation_keeps_an_rgb_image_of_the_expected_size():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    sizes = {name: perturb(im, name).size for name in PERTURBATIONS}
    assert sizes["none"] == sizes["jpeg50"] == sizes["blur1"] == (80, 60)
    assert sizes["resize0.5"] == (40, 30) and sizes["resize1.5"] == (120, 90) and sizes["reshare"] == (60, 45)
    assert np.abs(np.asarray(perturb(im, "jpeg50"), float) - np.asarray(im, float)).mean() > 1


def test_fold_metrics_rates_at_the_threshold_tpr_at_fpr_ece_and_the_band():
    y = np.array([0] * 100 + [1] * 50)
    p = np.concatenate([np.linspace(0.0, 0.6, 100), np.linspace(0.4, 1.0, 50)])
    m = fold_metrics(y, p, 0.5, {"low": 0.45, "high": 0.55})
    assert m["n_real"] == 100 and m["n_fake"] == 50
    assert abs(m["real_fpr"] - (p[:100] >= 0.5).mean()) < 1e-12 and abs(m["fake_recall"] - (p[100:] >= 0.5).mean()) < 1e-12
    assert m["tpr_at_5fpr"] == float((p[100:] > np.quantile(p[:100], 0.95, method="higher")).mean())
    assert 0.5 < m["auc"] < 1 and 0 <= m["ece"] <= 1 and 0 < m["band_share"] < 1 and 0 < m["band_error_share"] < 1
    assert fold_metrics(y[:100], p[:100], 0.5)["auc"] is None  # one class: no AUC, no TPR
