"""--tune probe: heads fitted on frozen features of augmented draws, saved as a plain detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aigi.detector.model import Detector
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from aigi.training.probe import fit_probe
from synthetic import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=40, generators=("genA", "genB"), size=48)


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), backbone="cnn-small", tune="probe", epochs=2, epoch_images=120,
                batch_size=32, workers=0, progress=False, augment="light", precision="fp32", image_size=32,
                crops=2, scales=(1.0, 0.5), min_side=16)
    return TrainConfig(**{**base, **kw})


def test_probe_folds_the_standardisation_into_plain_heads():
    torch.manual_seed(0)
    det = Detector.from_backbone("cnn-small", ["g"], image_size=32)
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, [0.01] * 128 + [100.0] * 128, (400, 256))  # wildly different scales
    y = (x[:, 0] > 5.0).astype(float)  # decided by a tiny-scale feature
    info = fit_probe(det, x, y, y.astype(int), l2=1e-4, source_loss_weight=0.5)
    with torch.no_grad():
        out = det.heads(torch.from_numpy(x).float())
    acc = ((out.binary_logits.numpy() > 0) == (y == 1)).mean()
    assert acc > 0.95 and info["rows"] == 400 and info["loss_after"] < info["loss_before"]


def test_probe_trains_keeps_the_encoder_and_resumes_from_saved_features(dataset, tmp_path):
    out = train(_cfg(dataset, tmp_path / "run"))
    det = Detector.from_pretrained(out)
    fresh = Detector.from_backbone("cnn-small", ["genA", "genB"], image_size=32)  # cnn-small: seeded random init
    saved = load_file(str(out / "model.safetensors"))
    assert det.preprocessing.scales == (1.0, 0.5) and det.config["training"]["probe"]["rows"] == 240
    assert sorted(p.name for p in (out / "last").glob("probe-*.safetensors")) == ["probe-0.safetensors", "probe-1.safetensors"]
    # A second run with the same settings reuses the features and fits the same heads.
    again = train(_cfg(dataset, tmp_path / "run"))
    assert torch.equal(load_file(str(again / "model.safetensors"))["binary_head.weight"], saved["binary_head.weight"])
    assert all(k in saved for k in fresh.state_dict())
    # ... but other settings never reuse them.
    other = train(_cfg(dataset, tmp_path / "run", probe_l2=1e-1))
    assert not torch.equal(load_file(str(other / "model.safetensors"))["binary_head.weight"], saved["binary_head.weight"])


def test_half_scale_crops_are_added_where_the_image_holds_them():
    from PIL import Image

    from aigi.io.inputs import load_input

    det = Detector.from_backbone("cnn-small", ["g"], image_size=32, crops=2, scales=(1.0, 0.5), min_side=16)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    x = load_input(big, det.preprocessing)
    assert x.scales == [1.0, 1.0, 0.5, 0.5] and all(b[2] - b[0] == 64 for b in x.boxes[2:])
    small = load_input(big.resize((50, 40)), det.preprocessing)  # 40 * 0.5 < 32: no half-size view
    assert set(small.scales) == {1.0}
    (pred,) = det.predict(big)
    assert [c["scale"] for c in pred.crops] == [1.0, 1.0, 0.5, 0.5]


def test_a_run_on_a_subset_reuses_an_earlier_runs_draws_reweighted(dataset, tmp_path):
    import csv

    from aigi.io.datasets import load_dataset

    full = train(_cfg(dataset, tmp_path / "full"))
    rows = [s for s in load_dataset(dataset, "all").samples if s.generator != "genB"]  # one source left out
    manifest = tmp_path / "subset.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "generator"])
        for s in rows:
            w.writerow([s.display, s.label, s.generator])
    sub = train(_cfg(manifest, tmp_path / "sub", probe_features=str(full)))
    det = Detector.from_pretrained(sub)
    probe = det.config["training"]["probe"]
    assert det.labels == ["real", "genA"]
    assert probe["reused_from"] == str(full) and 0 < probe["rows_reused"] < 240
    assert not list((sub / "last").glob("probe-*.safetensors"))  # nothing was encoded again
    # Draws shaped differently (another augmentation) cannot be reused.
    with pytest.raises(ValueError, match="augment"):
        train(_cfg(manifest, tmp_path / "other", probe_features=str(full), augment="none"))


def test_a_run_with_fewer_augmentation_policies_reuses_the_draws_of_its_own(dataset, tmp_path):
    """Draws made one policy at a time know their policy: a run with a subset of the policies keeps
    exactly those draws (an ablation without encoding again); a policy the pool never drew is refused."""
    pool = train(_cfg(dataset, tmp_path / "pool", augment="clean+jpeg+half"))
    parts = [load_file(str(p)) for p in sorted((pool / "last").glob("probe-*.safetensors"))]
    policy = torch.cat([p["policy"] for p in parts]).numpy()
    from aigi.io.augment import POLICIES

    assert set(policy) == {POLICIES.index(p) for p in ("clean", "jpeg", "half")}
    sub = train(_cfg(dataset, tmp_path / "sub", augment="clean+jpeg", scales=(1.0,), probe_features=str(pool)))
    assert Detector.from_pretrained(sub).config["training"]["probe"]["rows_reused"] == int(
        np.isin(policy, [POLICIES.index("clean"), POLICIES.index("jpeg")]).sum())
    with pytest.raises(ValueError, match="augment"):
        train(_cfg(dataset, tmp_path / "more", augment="clean+reshare", probe_features=str(pool)))
