"""aigi.training.adapt: a few examples of a new generator, the encoder untouched, the old ones not forgotten."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from aigi.cli.main import main
from aigi.detector.model import Detector
from aigi.training.adapt import adapt, row_weights
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from aigi.training.memory import MEMORY_NAME, Memory, balanced_pick, budget_rows, save_memory_for, trim_memory
from synthetic import make_dataset, stripes, synthetic_image

MEMORY_MB = 0.05  # 200 rows of tiny-clip's 128-d features: small enough to bind on this data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A linear probe on tiny-clip that tells checkerboard fakes (genA) from smooth reals, with
    its record written by aigi train --memory-mb, and a folder of 20 stripe images."""
    root = tmp_path_factory.mktemp("adapt")
    data = make_dataset(root / "data", n_per_class=60, generators=("genA",), size=32)
    model = train(TrainConfig(data=str(data), out=str(root / "model"), backbone="tiny-clip", tune="linear",
                              augment="none", epochs=3, batch_size=16, workers=0, progress=False, precision="fp32",
                              head_lr=1e-2, memory_mb=MEMORY_MB, target_fpr=0.1))
    rng = np.random.default_rng(5)
    new = root / "new"
    new.mkdir()
    for i in range(20):
        stripes(rng).save(new / f"s{i:02d}.png")
    test = {"real": [synthetic_image(rng, False, 32) for _ in range(40)],
            "genA": [synthetic_image(rng, True, 32) for _ in range(40)],
            "stripes": [stripes(rng) for _ in range(40)]}
    return {"data": data, "model": model, "new": new, "test": test, "root": root}


def scores(detector, images):
    return np.array([p.p_fake for p in detector.predict(images)])


def auc(detector, test, fake):
    real, other = scores(detector, test["real"]), scores(detector, test[fake])
    return roc_auc_score([0] * len(real) + [1] * len(other), np.r_[real, other])


def test_train_writes_a_bounded_record(trained):
    memory = Memory.load(trained["model"] / MEMORY_NAME)
    s = memory.summary()
    assert 0 < len(memory) <= budget_rows(128, MEMORY_MB)
    assert s["n_held_out"] > 0 and s["n_fit"] > 0 and set(s["per_source"]) == {"real", "genA"}
    assert (trained["model"] / MEMORY_NAME).stat().st_size < MEMORY_MB * 2**20 + 4096
    assert memory.encoder_sha256 and memory.features.shape[1] == 128


def test_adapt_learns_the_new_generator_keeps_the_old_and_the_encoder_bytes(trained, tmp_path):
    before = Detector.from_pretrained(trained["model"])
    test = trained["test"]
    recall_before = float((scores(before, test["stripes"]) >= before.threshold).mean())
    r = adapt(trained["model"], {"stripes": [trained["new"]]}, tmp_path / "adapted", progress=False, workers=0)
    after = Detector.from_pretrained(tmp_path / "adapted")
    recall_after = float((scores(after, test["stripes"]) >= after.threshold).mean())
    assert recall_before < 0.5 and recall_after >= 0.9, (recall_before, recall_after)
    assert auc(after, test, "genA") >= auc(before, test, "genA") - 0.01  # not forgotten
    assert float((scores(after, test["real"]) >= after.threshold).mean()) <= 0.2
    # The encoder is the old file's, tensor for tensor and byte for byte.
    old, new = load_file(str(trained["model"] / "model.safetensors")), load_file(str(tmp_path / "adapted" / "model.safetensors"))
    encoder = [k for k in old if not k.startswith(("binary_head.", "source_head."))]
    assert encoder and set(encoder) == {k for k in new if not k.startswith(("binary_head.", "source_head."))}
    for k in encoder:
        assert old[k].dtype == new[k].dtype and old[k].shape == new[k].shape
        assert old[k].numpy().tobytes() == new[k].numpy().tobytes(), k
    assert new["source_head.weight"].shape == (3, 128)
    # The old source rows moved little; the new label is appended.
    assert after.labels == ["real", "genA", "stripes"]
    config = json.loads((tmp_path / "adapted" / "config.json").read_text())
    (record,) = config["adaptations"]
    (added,) = record["added"]
    assert added["generator"] == "stripes" and added["k"] == 20 and added["n_held_out"] == 4 and added["new_label"]
    assert added["sources"] == [str(trained["new"])] and record["date"]
    assert record["calibration"]["threshold_rule"] == "target FPR 0.1 on held-out reals"
    assert config["training"]["calibration"]["by"] == "aigi adapt"
    assert config["temperature"] == after.temperature and r["seconds_total"] < 60
    # What the function returns is what was saved.
    assert np.allclose(scores(r["detector"], test["stripes"]), scores(after, test["stripes"]), atol=1e-6)
    # The record grew by the new images and kept its bound.
    grown = Memory.load(tmp_path / "adapted" / MEMORY_NAME)
    assert "stripes" in grown.sources and len(grown) <= budget_rows(128, MEMORY_MB)
    assert grown.encoder_sha256 == Memory.load(trained["model"] / MEMORY_NAME).encoder_sha256


def test_adapting_twice_remembers_both(trained, tmp_path):
    rng = np.random.default_rng(11)
    dots = tmp_path / "dots"
    dots.mkdir()
    for i in range(12):
        arr = np.asarray(synthetic_image(rng, False, 32)).astype(float)
        arr[::3, ::3] += 80
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(dots / f"d{i}.png")
    adapt(trained["model"], {"stripes": [trained["new"]]}, tmp_path / "one", progress=False, workers=0)
    adapt(tmp_path / "one", {"dots": [dots]}, tmp_path / "two", progress=False, workers=0)
    two = Detector.from_pretrained(tmp_path / "two")
    assert two.labels == ["real", "genA", "stripes", "dots"]
    assert [a["added"][0]["generator"] for a in two.config["adaptations"]] == ["stripes", "dots"]
    assert float((scores(two, trained["test"]["stripes"]) >= two.threshold).mean()) >= 0.9


def test_a_model_without_a_record_says_how_to_make_one(trained, tmp_path):
    bare = tmp_path / "bare"
    Detector.from_pretrained(trained["model"]).save_pretrained(bare)
    with pytest.raises(ValueError, match="--train-data .* `aigi memory"):
        adapt(bare, {"stripes": [trained["new"]]}, tmp_path / "x", progress=False)
    # ... and makes it from the training data when given.
    r = adapt(bare, {"stripes": [trained["new"]]}, tmp_path / "y", train_data=[trained["data"]], progress=False, workers=0)
    assert r["record"]["from"].startswith("made from --train-data") and (tmp_path / "y" / MEMORY_NAME).exists()
    # aigi memory writes one for a model that has none.
    save_memory_for(Detector.from_pretrained(bare), trained["data"], bare / MEMORY_NAME, max_mb=MEMORY_MB, progress=False)
    assert Memory.load(bare / MEMORY_NAME).summary()["n_held_out"] > 0


def test_a_record_of_another_encoder_is_refused(trained, tmp_path):
    torch.manual_seed(3)
    other = Detector.from_backbone("tiny-clip", ["genA"]).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="another encoder"):
        adapt(other, {"stripes": [trained["new"]]}, tmp_path / "x", memory=trained["model"] / MEMORY_NAME, progress=False)


def test_unreadable_new_images_are_reported_and_skipped(trained, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in sorted(trained["new"].iterdir())[:6]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    r = adapt(trained["model"], {"stripes": [folder]}, tmp_path / "a", progress=False, workers=0)
    assert r["added"][0]["k"] == 6 and r["added"][0]["unreadable"] == 1
    assert "broken.png" in capsys.readouterr().err
    with pytest.raises(ValueError, match="none of the 1 image"):
        adapt(trained["model"], {"junk": [folder / "broken.png"]}, tmp_path / "b", progress=False, workers=0)


def test_cli(trained, tmp_path, capsys):
    assert main(["adapt", "--model", str(trained["model"]), "--add", f"stripes={trained['new']}",
                 "--out", str(tmp_path / "a"), "-q", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "stripes (K=20, new label)" in err and "saved" in err
    with pytest.raises(SystemExit, match="GENERATOR=PATH"):
        main(["adapt", "--model", str(trained["model"]), "--add", "stripes", "--out", str(tmp_path / "b")])
    bare = Detector.from_pretrained(trained["model"]).save_pretrained(tmp_path / "bare")
    assert main(["memory", str(bare), str(trained["data"]), "--max-mb", "0.02", "-q", "--workers", "0"]) == 0
    assert "feature vectors" in capsys.readouterr().err and (bare / MEMORY_NAME).exists()


def test_balancing_rules():
    labels = [0] * 10 + [1] * 90
    groups = ["r"] * 10 + ["a"] * 80 + ["b"] * 10
    pick = balanced_pick(labels, groups, 40)
    chosen = [groups[i] for i in pick]
    assert chosen.count("r") == 10 and chosen.count("a") == 20 and chosen.count("b") == 10  # reals' unused half passes on
    w = row_weights(np.array([0, 0, 1, 1, 1]), ["r", "r", "a", "a", "new"], ["new"], new_weight=0.5)
    assert np.isclose(w.sum(), 1) and np.isclose(w[:2].sum(), 0.5) and np.isclose(w[4], 0.25)
    m = Memory(np.zeros((100, 8), np.float32), np.array(labels), ["x"] * 100, groups, np.arange(100) % 4 == 0, "h")
    trimmed = trim_memory(m, 30 * (2 * 8 + 6) / 2**20)  # room for 30 rows of 8-d features
    assert len(trimmed) == 30 and trimmed.held_out.sum() == 8
