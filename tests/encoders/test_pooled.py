"""aigi.encoders.pooled: a ViT's token statistics (stats:NAME) and two encoders side by side (A+B)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aigi.detector.model import Detector
from aigi.encoders.backbones import load_backbone


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    """A randomly initialised 6-block DINOv2 directory, saved like a hub download."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=32)).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3}))
    return path


def test_token_stats_reads_the_class_token_at_several_depths(tiny_dinov2):
    encoder, prep = load_backbone(f"stats:{tiny_dinov2}")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = encoder(x)
        out = encoder.model(pixel_values=x, output_hidden_states=True)
    assert feats.shape == (3, 32 * 5) and encoder.feature_dim == 160
    assert torch.allclose(feats[:, :32], out.hidden_states[2][:, 0])  # after block 2 of 6 (a third of the way)
    assert torch.allclose(feats[:, 32:64], out.hidden_states[4][:, 0])
    assert torch.allclose(feats[:, 64:96], out.last_hidden_state[:, 0])
    assert torch.allclose(feats[:, 128:], out.last_hidden_state[:, 1:].std(1))
    assert prep.mean == (0.485, 0.456, 0.406)


def test_concat_gives_each_encoder_its_own_normalisation(tiny_dinov2):
    both, prep = load_backbone(f"cnn-small+{tiny_dinov2}", image_size=32)
    cnn, cnn_prep = load_backbone("cnn-small", image_size=32)
    vit, vit_prep = load_backbone(str(tiny_dinov2), image_size=32)
    both.parts[0].load_state_dict(cnn.state_dict())
    pixels = torch.rand(2, 3, 32, 32)  # in [0, 1]
    as_cnn = (pixels - torch.tensor(cnn_prep.mean).view(1, 3, 1, 1)) / torch.tensor(cnn_prep.std).view(1, 3, 1, 1)
    as_vit = (pixels - torch.tensor(vit_prep.mean).view(1, 3, 1, 1)) / torch.tensor(vit_prep.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = both.eval()(as_cnn)  # the detector's input: normalised for the first part
        expected = torch.cat([cnn.eval()(as_cnn), vit.eval()(as_vit)], dim=1)
    assert prep.mean == cnn_prep.mean and out.shape[1] == cnn.feature_dim + vit.feature_dim
    assert torch.allclose(out, expected, atol=1e-5)


def test_pooled_encoders_survive_a_save_and_a_reload(tiny_dinov2, tmp_path):
    det = Detector.from_backbone(f"cnn-small+stats:{tiny_dinov2}", ["genA"], image_size=32, crops=2)
    det.save_pretrained(tmp_path / "m")
    again = Detector.from_pretrained(tmp_path / "m")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(det.eval().encoder(x), again.eval().encoder(x), atol=1e-6)
    assert again.config["backbone_config"]["aigi_encoder"] == "concat"
    with pytest.raises(ValueError, match="frozen"):
        again.encoder.blocks()
