"""Crop scores combine by the documented rule; too-small images get no verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigi.detector.model import Detector
from aigi.detector.scoring import combine_crops
from aigi.io.inputs import ModelInput


def test_mean_logit_rule():
    s = combine_crops(np.array([2.0, -1.0, 0.5]), np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), temperature=2.0)
    assert s.p_fake == pytest.approx(1 / (1 + np.exp(-(1.5 / 3) / 2.0)))
    assert s.crop_p_fake == pytest.approx(1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5]) / 2.0)))
    assert s.source_probs == pytest.approx([0.5, 0.5])


def test_predictions_keep_every_crop_and_match_score_batch(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    det = Detector.from_backbone("tiny-clip", ["g"], crops=4, min_side=16).eval()
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    (pred,) = det.predict(im)
    assert len(pred.crops) == 4 and pred.image_size == [90, 70]
    # Each crop's p_fake is that crop scored alone; the image's is the mean-logit combination.
    from aigi.io.inputs import load_input

    x = load_input(im, det.preprocessing)
    p_each, _ = det.score_batch(x.pixels)
    assert [c["p_fake"] for c in pred.crops] == pytest.approx(p_each.tolist())
    logits = np.log(p_each / (1 - p_each)) * det.temperature
    assert pred.p_fake == pytest.approx(1 / (1 + np.exp(-logits.mean() / det.temperature)))
    (one,) = det.predict(im, crops=1)
    assert len(one.crops) == 1


def test_too_small_images_are_uncertain_with_a_note():
    det = Detector.from_backbone("tiny-clip", ["g"], min_side=32).eval()
    x = ModelInput("icon.png", np.zeros((0, 3, 32, 32), np.float32), [], (16, 16), too_small=True)
    (scores,) = det.score_inputs([x])
    pred = det.make_prediction(x, scores)
    assert scores is None and pred.p_fake is None and pred.verdict == "uncertain" and pred.too_small
    assert "16x16" in pred.note and "32 px" in pred.note
