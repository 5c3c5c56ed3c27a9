import json

import numpy as np
import pytest
import torch
from PIL import Image

from aigi.encoders.backbones import load_backbone
from aigi.encoders.hub import TINY_CLIP
from aigi.io.preprocessing import Preprocessing, preprocessing_from_processor_dict
from synthetic import SHARED_DATA

ZOO_DINOV2 = SHARED_DATA.parent / "zoo" / "dinov2-s14-imgfocus"


def test_tiny_clip_features_and_preprocessing():
    encoder, prep = load_backbone(TINY_CLIP)
    assert (prep.size, prep.crop) == (32, 32)
    x = torch.from_numpy(np.stack([prep(Image.new("RGB", (50, 40), (10, 20, 30)))] * 2))
    assert x.shape == (2, 3, 32, 32)
    assert encoder(x).shape == (2, encoder.feature_dim)
    assert len(encoder.blocks()) == 4
    assert encoder.lora_target_modules() == ["q_proj", "v_proj"]


@pytest.mark.parametrize("size", [(1, 1), (20000, 10), (10, 20000), (3, 7)])
def test_preprocessing_any_size_and_aspect(size):
    prep = Preprocessing(size=224, crop=224)
    arr = prep(Image.new("RGB", size, (255, 0, 0)))
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    # A pure red image stays pure red after normalisation, whatever its shape.
    assert np.allclose(arr[:, 100, 100], (np.array([1.0, 0, 0]) - prep.mean) / prep.std, atol=1e-5)


def test_image_size_override_interpolates_positions():
    encoder, prep = load_backbone(TINY_CLIP, image_size=48)
    assert prep.crop == 48
    x = torch.from_numpy(prep(Image.new("RGB", (64, 64)))).unsqueeze(0)
    assert encoder(x).shape == (1, encoder.feature_dim)


def test_preprocessing_matches_transformers_clip_processor():
    from transformers import CLIPImageProcessor

    hf = CLIPImageProcessor()  # the openai/clip-vit-* recipe: shortest edge 224, centre crop 224
    prep = preprocessing_from_processor_dict(hf.to_dict())
    assert (prep.size, prep.crop, prep.resize) == (224, 224, "shortest_edge")
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    ours = prep(im)
    theirs = hf(images=im, return_tensors="np")["pixel_values"][0]
    # Same integer sizes, crop offsets, resampling and normalisation; only rare rounding differs.
    assert np.abs(ours - theirs).mean() < 1e-4 and np.abs(ours - theirs).max() < 0.05


def test_local_full_clip_directory_loads_its_vision_tower(tmp_path):
    """A saved full CLIP (text + vision), as on the hub, loads as its vision tower with its weights."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=16,
    )
    clip = CLIPModel(config)
    clip.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    encoder, prep = load_backbone(str(tmp_path))
    assert (prep.size, prep.crop) == (64, 64)
    saved = clip.vision_model.embeddings.patch_embedding.weight
    loaded = encoder.model.embeddings.patch_embedding.weight
    assert torch.equal(saved, loaded)


def test_zoo_dinov2_loads_with_its_preprocessing():
    if not ZOO_DINOV2.exists():
        pytest.skip(f"{ZOO_DINOV2} is absent: needs the shared model zoo beside the checkout")
    encoder, prep = load_backbone(str(ZOO_DINOV2))
    processor = json.loads((ZOO_DINOV2 / "preprocessor_config.json").read_text())
    assert (prep.size, prep.crop, prep.resize) == (224, 224, "exact")
    assert tuple(prep.mean) == tuple(processor["image_mean"])
    assert encoder.feature_dim == 384
    assert encoder.lora_target_modules() == ["q_proj", "v_proj"]
    with torch.inference_mode():
        x = torch.from_numpy(prep(Image.new("RGB", (481, 321), (90, 120, 200)))).unsqueeze(0)
        features = encoder(x)
    assert features.shape == (1, 384) and torch.isfinite(features).all()
