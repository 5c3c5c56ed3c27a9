"""Heatmaps (aigi.inference.explain, aigi explain) and the worst mistakes of aigi eval's report."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aigi.cli.main import main
from aigi.detector.scoring import Prediction
from aigi.inference.explain import heatmap


def _prediction(p: float, size=(400, 200)) -> Prediction:
    w, h = size
    crops = [{"box": [0, 0, w // 2, h], "p_fake": p}, {"box": [w // 2, 0, w, h], "p_fake": p}]
    return Prediction("a.png", p_fake=p, verdict="ai-generated" if p >= 0.5 else "real", crops=crops, image_size=[w, h])


def test_heatmap_colours_crops_by_p_fake_and_scales_boxes():
    grey = Image.new("RGB", (800, 400), (128, 128, 128))  # twice the size the model decoded
    hot, cold = np.asarray(heatmap(grey, _prediction(0.99))), np.asarray(heatmap(grey, _prediction(0.01)))
    assert hot.shape == cold.shape and hot.shape[2] == 3
    red_minus_blue = lambda a: (a[..., 0].astype(int) - a[..., 2].astype(int)).mean()  # noqa: E731
    # The colour bar is the same in both; the crops tint the whole image red or blue.
    assert red_minus_blue(hot) > red_minus_blue(cold) + 20
    # A too-small image has no crops: still an image, saying so.
    small = Prediction("t.png", verdict="uncertain", note="too small to judge", image_size=[8, 8], too_small=True)
    assert heatmap(Image.new("RGB", (8, 8)), small).size[0] > 100


def test_explain_writes_a_png(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(src, quality=90)
    out = tmp_path / "heat.png"
    assert main(["explain", str(src), "--out", str(out), "--model", str(model_dir), "--crops", "6"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300
    captured = capsys.readouterr()
    assert str(src) in captured.out and "heatmap of 6 crop(s)" in captured.err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["explain", str(bad), "--out", str(out), "--model", str(model_dir)]) == 1
    assert "bad.jpg: not an image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["explain", str(src), "--out", str(tmp_path / "heat.jpg"), "--model", str(model_dir)])
    assert e.value.code == 2 and "written as a .png" in capsys.readouterr().err


def test_eval_report_shows_worst_mistakes_with_heatmaps(model_dir, tmp_path):
    from synthetic import make_dataset

    data = make_dataset(tmp_path / "ds", n_per_class=6, size=40)
    out = tmp_path / "ev"
    # Threshold 0.001: every real is a false positive; 6 reals, the 4 highest are shown.
    assert main(["eval", str(data), "--model", str(model_dir), "--out", str(out), "--threshold", "0.001", "-q"]) == 0
    report = (out / "report.md").read_text()
    assert "## Worst mistakes" in report and "![false-positive-1.png](worst/false-positive-1.png)" in report
    assert sorted(p.name for p in (out / "worst").glob("*.png")) == [f"false-positive-{i}.png" for i in range(1, 5)]
    assert "### False negatives\n\nNone at threshold 0.001." in report
