"""--model univfd: UnivFD's published head, shipped bit for bit, wired onto a CLIP-L-shaped encoder.

No CLIP weights can be had here, so the wiring is tested on a randomly initialised CLIP
ViT-L/14-shaped vision tower (1 layer instead of 24; hidden size, patch, input size and the
768-d projection as the real one) against the real head.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aigi.detector.model import Detector
from aigi.detector.registry import BUNDLED_MODELS_DIR
from aigi.encoders.published import CLIP_ENV
from aigi.inference.embed import embed, load_features
from aigi.training.adapt import adapt
from synthetic import make_dataset

ZOO = Path(__file__).resolve().parents[3] / "shared" / "zoo" / "univfd"
HEAD = BUNDLED_MODELS_DIR / "univfd" / "univfd_head.safetensors"


def clip_l14_shaped(layers: int = 1):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=layers,
                              patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu")
    return CLIPVisionModelWithProjection(config).eval()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip-l14-shaped")
    clip_l14_shaped().save_pretrained(d)
    return d


@pytest.fixture
def univfd(clip_dir, monkeypatch):
    monkeypatch.setenv(CLIP_ENV, str(clip_dir))
    return Detector.from_pretrained("univfd")


def test_packaged_head_is_fc_weights_bit_for_bit():
    pth = ZOO / "fc_weights.pth"
    if not pth.exists():
        pytest.skip(f"{pth} is absent: this test needs ../shared/zoo beside the checkout")
    original = torch.load(pth, map_location="cpu", weights_only=True)
    packaged = load_file(str(HEAD))
    assert set(packaged) == set(original) == {"weight", "bias"}
    for k in original:
        assert packaged[k].dtype == original[k].dtype and packaged[k].shape == original[k].shape
        assert packaged[k].numpy().tobytes() == original[k].numpy().tobytes(), k
    assert (BUNDLED_MODELS_DIR / "univfd" / "LICENSE").read_text() == (ZOO / "LICENSE").read_text()


def test_univfd_is_clip_image_embeds_then_the_head_on_a_centre_crop(univfd, clip_dir):
    assert univfd.encoder.feature_dim == 768 and univfd.labels == ["real"]
    assert univfd.preprocessing.crop == 224 and univfd.preprocessing.crops == 1 and univfd.preprocessing.native
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (261, 300, 3), dtype=np.uint8))
    pred = univfd.predict(im)[0]
    # UnivFD's test transform by hand: CenterCrop(224) (torchvision's rounding), ToTensor, CLIP mean/std.
    top, left = int(round((261 - 224) / 2.0)), int(round((300 - 224) / 2.0))
    x = np.asarray(im, np.float32)[top:top + 224, left:left + 224] / 255.0
    x = (x - np.array([0.48145466, 0.4578275, 0.40821073], np.float32)) / np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    from transformers import CLIPVisionModelWithProjection

    clip = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    head = load_file(str(HEAD))
    with torch.no_grad():
        embeds = clip(pixel_values=torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).image_embeds
        expected = torch.sigmoid(embeds @ head["weight"].T + head["bias"]).item()
    assert abs(pred.p_fake - expected) < 1e-6
    assert pred.crops[0]["box"] == [left, top, left + 224, top + 224]
    assert pred.generator == ""  # UnivFD names no generator


def test_offline_without_clip_weights_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(CLIP_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(OSError) as e:
        Detector.from_pretrained("univfd")
    message = str(e.value)
    assert "\n" not in message and CLIP_ENV in message and "openai/clip-vit-large-patch14" in message
    # Without HF_HUB_OFFLINE, an unreachable hub is found out at once (not after a minute of retries).
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("aigi.encoders.published.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(OSError, match=CLIP_ENV):
        Detector.from_pretrained("univfd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    import os

    proc = subprocess.run([sys.executable, "-m", "aigi.cli", "detect", str(tmp_path / "x.png"), "--model", "univfd"],
                          env={k: v for k, v in {**os.environ, **env}.items() if k != CLIP_ENV},
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("aigi: cannot load model: univfd needs"), proc.stderr
    with pytest.raises(OSError, match="not a directory"):
        monkeypatch.setenv(CLIP_ENV, str(tmp_path / "nowhere" / "clip"))
        Detector.from_pretrained("univfd")


def test_univfd_embeds_and_adapts_and_the_adapted_model_reloads(univfd, tmp_path):
    data = make_dataset(tmp_path / "old", n_per_class=8, generators=("genA",), size=32)
    new = make_dataset(tmp_path / "new", n_per_class=6, generators=("genB",), size=32, seed=3) / "fake" / "genB"
    embed(univfd, [new], tmp_path / "features", progress=False, workers=0)
    f = load_features(tmp_path / "features")
    assert f.features.shape == (6, 768)
    assert f.manifest["model"]["name"] == "univfd"
    assert f.manifest["model"]["weights_files"] == ["model.safetensors", "univfd_head.safetensors"]
    r = adapt(univfd, {"genB": [new]}, tmp_path / "adapted", train_data=[data], progress=False, workers=0)
    again = Detector.from_pretrained(tmp_path / "adapted")
    assert again.labels == ["real", "genB"] and again.encoder.feature_dim == 768
    images = sorted(new.iterdir())[:3]
    a = [p.p_fake for p in r["detector"].predict(images)]
    b = [p.p_fake for p in again.predict(images)]
    assert np.allclose(a, b, atol=1e-6)
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert config["architecture"] == "aigi.Detector" and config["published_source"]["name"] == "UnivFD"
    assert (tmp_path / "adapted" / "LICENSE").read_text() == (BUNDLED_MODELS_DIR / "univfd" / "LICENSE").read_text()
