import json

import numpy as np
import pytest
import torch
from PIL import Image

from aigi.detector.model import Detector
from aigi.detector.registry import CONFIG_NAME, WEIGHTS_NAME, resolve_model_path
from aigi.detector.scoring import ImageScores
from aigi.io.inputs import ModelInput


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return Detector.from_backbone("tiny-clip", ["genB", "genA"]).eval()


def _images(tmp_path, n=5):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (34 + i * 7, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_labels_start_with_real_and_are_sorted(detector):
    assert detector.labels == ["real", "genA", "genB"]


def test_save_load_round_trip_gives_identical_scores(detector, tmp_path):
    paths = _images(tmp_path)
    before = detector.predict(paths)
    out = detector.save_pretrained(tmp_path / "model")
    assert sorted(f.name for f in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = Detector.from_pretrained(out)
    after = loaded.predict(paths)
    assert [p.p_fake for p in before] == [p.p_fake for p in after]
    assert [p.generator_probs for p in before] == [p.generator_probs for p in after]
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["architecture"] == "aigi.Detector" and config["labels"] == ["real", "genA", "genB"]
    assert config["preprocessing"]["crop"] == 32


def test_predict_accepts_paths_and_pil_images_and_reports_errors(detector, tmp_path):
    good = _images(tmp_path, 2)
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a JPEG")
    results = detector.predict([good[0], Image.new("L", (40, 40), 128), bad, str(good[1])], batch_size=2)
    assert [bool(r.error) for r in results] == [False, False, True, False]
    assert "bad.jpg" in results[2].path and results[2].p_fake is None
    for r in (results[0], results[1], results[3]):
        assert 0.0 <= r.p_fake <= 1.0
        assert r.verdict in ("real", "ai-generated")
        assert abs(sum(r.generator_probs.values()) - 1) < 1e-6
    single = detector.predict(good[0])
    assert single[0].p_fake == results[0].p_fake


def test_verdict_follows_threshold_and_generator_only_for_fakes(detector):
    probs = np.array([0.2, 0.5, 0.3])
    x = ModelInput("x", np.zeros((1, 3, 32, 32), np.float32), [(0, 0, 32, 32)], (32, 32))
    detector.config["threshold"] = 0.7
    try:
        real = detector.make_prediction(x, ImageScores(0.69, probs, np.array([0.69])))
        fake = detector.make_prediction(x, ImageScores(0.7, probs, np.array([0.7])))
    finally:
        detector.config["threshold"] = 0.5
    assert (real.verdict, real.generator, real.p_generator) == ("real", "", None)
    assert fake.verdict == "ai-generated" and fake.generator == "genA"
    assert fake.p_generator == pytest.approx(0.5 / 0.8)


def test_unknown_model_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        resolve_model_path(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / CONFIG_NAME).write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not an aigi detector"):
        Detector.from_pretrained(tmp_path / "other")


def test_float16_save_halves_the_file_and_keeps_integer_buffers(tmp_path):
    torch.manual_seed(0)
    detector = Detector.from_backbone("cnn-small", ["genA"]).eval()  # has BatchNorm counters
    full = detector.save_pretrained(tmp_path / "fp32")
    half = detector.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    assert (half / WEIGHTS_NAME).stat().st_size < 0.6 * (full / WEIGHTS_NAME).stat().st_size
    from safetensors.torch import load_file

    state = load_file(str(half / WEIGHTS_NAME))
    assert all(v.dtype in (torch.float16, torch.int64) for v in state.values())
    assert any(v.dtype == torch.int64 for v in state.values())
    x = torch.from_numpy(np.stack([detector.preprocessing(Image.new("RGB", (40, 40), (120, 30, 60)))]))
    a, _ = detector.score_batch(x)
    b, _ = Detector.from_pretrained(half).score_batch(x)
    assert abs(a[0] - b[0]) < 1e-2


def test_bundled_default_model_scores_images_of_any_size():
    detector = Detector.from_pretrained("default")
    assert detector.labels[0] == "real" and len(detector.labels) >= 2
    assert 0 < detector.threshold < 1
    sizes = [(1, 1), (32, 32), (20000, 10), (3000, 2000), (481, 321)]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    results = detector.predict(images)
    assert all(r.error == "" for r in results)
    min_side = detector.preprocessing.min_side
    for (w, h), r in zip(sizes, results):
        if min(w, h) < min_side:  # too small to judge: said so, never a score
            assert r.too_small and r.p_fake is None and r.verdict == "uncertain" and "too small" in r.note
        else:
            assert not r.too_small and 0 <= r.p_fake <= 1 and r.verdict in ("real", "ai-generated", "uncertain")
