"""--tune top-k: a ViT's last blocks trained on cached tokens of its frozen first ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from aigi.detector.model import Detector
from aigi.encoders.backbones import load_backbone
from aigi.encoders.split import split_encoder
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from synthetic import make_dataset


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=32)).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3}))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=24, generators=("genA",), size=40)


@pytest.mark.parametrize("prefix", ["", "stats:"])
def test_top_of_bottom_is_the_encoder(tiny_dinov2, prefix):
    encoder, _ = load_backbone(f"{prefix}{tiny_dinov2}")
    bottom, top, trained = split_encoder(encoder.eval(), 2)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(top(bottom(x)), encoder(x), atol=1e-5)
    assert len(trained) == 3  # two blocks and the final norm
    # stats: reads the class token after blocks 2 and 4 of 6, so at most the last 2 can train.
    with pytest.raises(ValueError, match="at most the last 2 blocks" if prefix else "must lie in 1..5"):
        split_encoder(encoder, 3 if prefix else 6)


def _cfg(data, out, backbone, **kw):
    base = dict(data=str(data), out=str(out), backbone=str(backbone), tune="top-k", last_k=2, top_passes=2, epochs=2,
                epoch_images=48, batch_size=16, workers=0, progress=False, augment="clean+jpeg", precision="fp32",
                image_size=32, crops=1, min_side=16)
    return TrainConfig(**{**base, **kw})


def test_top_k_trains_only_the_top_saves_a_plain_detector_and_resumes(dataset, tiny_dinov2, tmp_path):
    out = train(_cfg(dataset, tmp_path / "run", tiny_dinov2))
    before = load_file(str(tiny_dinov2 / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert torch.equal(after["encoder.model.encoder.layer.0.mlp.fc1.weight"].float(),
                       before["encoder.layer.0.mlp.fc1.weight"].float())  # frozen as loaded
    assert not torch.equal(after["encoder.model.encoder.layer.5.mlp.fc1.weight"].float(),
                           before["encoder.layer.5.mlp.fc1.weight"].float())  # trained
    det = Detector.from_pretrained(out)
    assert det.config["training"]["top_k"]["passes"] == 2 and det.config["training"]["top_k"]["rows"] == 96
    assert sorted(p.name for p in (out / "last").glob("topk-*.safetensors")) == ["topk-0.safetensors", "topk-1.safetensors"]
    (pred,) = det.predict(next(p for p in (dataset / "fake").rglob("*.png")))
    assert 0.0 <= pred.p_fake <= 1.0
    # A run cut after its first pass resumes there: the same weights as one that ran through.
    (out / "config.json").unlink()
    state = json.loads((out / "last" / "topk-train" / "state.json").read_text())
    assert state["passes_done"] == 2
    again = train(_cfg(dataset, tmp_path / "run", tiny_dinov2))
    assert torch.equal(load_file(str(again / "model.safetensors"))["binary_head.weight"], after["binary_head.weight"])
