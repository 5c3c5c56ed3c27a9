"""aigi.inference.embed: features on disk, one record per image, resumable, and equal to what the heads see."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aigi.cli.main import main
from aigi.detector.model import Detector
from aigi.inference.embed import FeatureWriter, embed, load_features, model_identity
from synthetic import make_dataset, zip_folder


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return Detector.from_backbone("tiny-clip", ["genA", "genB"])


@pytest.fixture
def data(tmp_path):
    """64 px images (4 crops of 32 each), an unreadable file and one too small to judge."""
    root = make_dataset(tmp_path / "data", n_per_class=6, generators=("genA", "genB"), size=64)
    (root / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(root / "real" / "icon.png")
    return root


def test_features_are_what_the_heads_see(detector, data, tmp_path):
    summary = embed(detector, [data], tmp_path / "f", batch_size=8, workers=1, progress=False)
    assert (summary["n_features"], summary["n_errors"], summary["n_too_small"]) == (12, 1, 1)
    f = load_features(tmp_path / "f")
    assert len(f) == 12 and f.features.shape == (12, detector.encoder.feature_dim)
    assert [e["path"] for e in f.errors] == [str(data / "real" / "broken.png")]
    assert f.errors[0]["reason"]
    assert [e["path"] for e in f.too_small] == [str(data / "real" / "icon.png")]
    assert sorted(set(f.generators)) == ["genA", "genB", "real"]
    assert set(f.labels.tolist()) == {0, 1}
    assert (np.diff(f.crop_offsets) == 4).all() and f.boxes.shape == (48, 4)
    for i in range(len(f)):
        assert np.allclose(f.features[i], f.crops_of(i).mean(axis=0), atol=1e-6)
    # The heads of the pooled features give the image's scores, as aigi detect computes them.
    preds = {p.path: p for p in detector.predict(f.paths)}
    with torch.inference_mode():
        out = detector.heads(torch.from_numpy(f.features))
    p_fake = torch.sigmoid(out.binary_logits.double() / detector.temperature).numpy()
    for path, p in zip(f.paths, p_fake):
        assert abs(preds[path].p_fake - p) < 1e-5
        assert [c["box"] for c in preds[path].crops] == f.boxes[f.crop_offsets[f.paths.index(path)]:][:4].tolist()
    ident = f.manifest["model"]
    assert ident["encoder_sha256"] == model_identity(detector)["encoder_sha256"]
    assert ident["feature_dim"] == detector.encoder.feature_dim and f.manifest["crops"] == 4


def test_interrupted_run_resumes_to_one_record_per_image(detector, data, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    embed(detector, [data], whole, batch_size=8, workers=0, shard_size=3, progress=False)
    cut = tmp_path / "cut"
    real_write = FeatureWriter.write
    calls = []

    def dying_write(self, records):
        calls.append(len(records))
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the run
        real_write(self, records)

    monkeypatch.setattr(FeatureWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        embed(detector, [data], cut, batch_size=8, workers=0, shard_size=3, progress=False)
    monkeypatch.setattr(FeatureWriter, "write", real_write)
    # A kill between a shard's two renames leaves tensors without their sidecar, and a temp file.
    last = sorted(cut.glob("shard-*.json"))[-1]
    last.unlink()
    (cut / "shard-00099.safetensors.tmp").write_bytes(b"half")
    summary = embed(detector, [data], cut, batch_size=8, workers=0, shard_size=3, progress=False)
    assert summary["n_already"] == 6 and summary["n_images"] == 14  # 2 shards of 3 kept
    assert not list(cut.glob("*.tmp"))
    a, b = load_features(whole), load_features(cut)
    assert sorted(b.paths) == sorted(a.paths) and len(set(b.paths)) == len(b.paths)
    assert len(b.errors) == 1 and len(b.too_small) == 1
    order = [b.paths.index(p) for p in a.paths]
    assert np.allclose(a.features, b.features[order], atol=1e-6)
    # A finished run re-run does nothing.
    assert embed(detector, [data], cut, progress=False)["n_new"] == 0


def test_sigkill_then_rerun_gives_one_record_per_image(detector, tmp_path):
    """A real kill -9 of `aigi embed` in the middle of a run, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = make_dataset(tmp_path / "data", n_per_class=40, size=64)
    model = detector.save_pretrained(tmp_path / "model")
    cmd = [sys.executable, "-m", "aigi.cli", "embed", str(data), "--model", str(model), "--shard-size", "1",
           "--batch-size", "4", "--workers", "0", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list((tmp_path / "killed").glob("shard-*.json"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_at_kill = len(list((tmp_path / "killed").glob("shard-*.json")))
    assert 5 <= n_at_kill < 80, "the kill should land in the middle of the run"
    subprocess.run([*cmd, "--out", str(tmp_path / "killed")], env=env, check=True, capture_output=True)
    embed(Detector.from_pretrained(model), [data], tmp_path / "whole", workers=0, progress=False)
    a, b = load_features(tmp_path / "whole"), load_features(tmp_path / "killed")
    assert sorted(a.paths) == sorted(b.paths) and len(set(b.paths)) == len(b.paths) == 80
    order = [b.paths.index(p) for p in a.paths]
    assert np.allclose(a.features, b.features[order], atol=1e-6)


def test_another_model_is_refused(detector, data, tmp_path):
    embed(detector, [data / "fake"], tmp_path / "f", progress=False)
    torch.manual_seed(1)
    other = Detector.from_backbone("tiny-clip", ["genA"])
    with pytest.raises(ValueError, match="another model"):
        embed(other, [data], tmp_path / "f", progress=False)
    assert embed(other, [data], tmp_path / "f", overwrite=True, progress=False)["n_already"] == 0


def test_zip_and_manifest_inputs_keep_labels(detector, data, tmp_path):
    archive = zip_folder(data, tmp_path / "d.zip")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,generator\n" + f"{archive}::fake/genA/f0000.png,1,genA\n"
                        + f"{data / 'real' / 'r0000.png'},0,real\n")
    embed(detector, [manifest], tmp_path / "m", progress=False)
    f = load_features(tmp_path / "m")
    assert f.paths == [f"{archive}::fake/genA/f0000.png", str(data / "real" / "r0000.png")]
    assert f.labels.tolist() == [1, 0] and f.generators == ["genA", "real"]
    embed(detector, [archive], tmp_path / "z", split="all", progress=False)
    assert len(load_features(tmp_path / "z")) == 12


def test_cli(detector, data, tmp_path, capsys):
    model = detector.save_pretrained(tmp_path / "model")
    assert main(["embed", str(data), "--model", str(model), "--out", str(tmp_path / "f"), "-q", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "14 image(s): 12 embedded" in err and "1 unreadable" in err
    manifest = json.loads((tmp_path / "f" / "features.json").read_text())
    assert manifest["model"]["name"] == str(model)
    assert manifest["model"]["weights_sha256"] and manifest["model"]["weights_files"] == ["model.safetensors"]
    with pytest.raises(SystemExit, match="no such"):
        main(["embed", str(tmp_path / "missing"), "--model", str(model), "--out", str(tmp_path / "g")])
