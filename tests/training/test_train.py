import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aigi.detector.model import Detector
from aigi.detector.thresholds import threshold_for_fpr
from aigi.evaluation.evaluate import evaluate
from aigi.io.datasets import load_dataset
from aigi.training.calibration import fit_temperature
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from synthetic import make_dataset, shared_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=48, generators=("genA", "genB"))


def small_config(data, out, **kw):
    base = dict(data=str(data), out=str(out), backbone="tiny-clip", epochs=2, batch_size=16, workers=0,
                progress=False, augment="none", precision="fp32", lr=1e-3)
    return TrainConfig(**{**base, **kw})


def weights(path):
    return load_file(str(path))


def test_tiny_clip_on_cifake_ends_far_above_chance(tmp_path):
    data = shared_file("cifake-dev.zip")
    out = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), backbone="tiny-clip", epochs=8,
                            max_images=600, max_val_images=300, progress=False, workers=1))
    detector = Detector.from_pretrained(out)
    test_set = load_dataset(data, "test").subset(400, seed=1)
    metrics, _ = evaluate(detector, test_set, batch_size=64, progress=False)
    assert metrics["n_images"] == 400
    assert metrics["auc"] > 0.75, metrics
    assert metrics["accuracy"] > 0.65, metrics
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"]["n_images"] == 600
    assert config["training"]["calibration"]["method"] == "temperature"


def test_training_learns_and_writes_logs(dataset, tmp_path):
    out = train(small_config(dataset, tmp_path / "run", epochs=3))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "last", "log.jsonl", "model.safetensors", "train_config.json"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3 * 5  # 76 train images / batch 16 -> 5 steps per epoch
    assert [r["epoch"] for r in log if r.get("event") == "epoch"] == [0, 1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["real", "genA", "genB"]
    assert config["metrics"]["val"]["accuracy"] >= 0.9  # the checkerboard is easy to see


def test_resume_after_stop_equals_uninterrupted(dataset, tmp_path):
    full = train(small_config(dataset, tmp_path / "full", save_every=2))
    cut = small_config(dataset, tmp_path / "cut", save_every=2, stop_after_steps=7)
    train(cut)  # stops at step 7: the last checkpoint holds step 6, epoch 2 step 1
    state = json.loads((tmp_path / "cut" / "last" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (6, 1, 1)
    resumed = train(small_config(dataset, tmp_path / "cut", resume=True))
    a, b = weights(full / "model.safetensors"), weights(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_full = (full / "log.jsonl").read_text().splitlines()
    log_resumed = (resumed / "log.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]  # noqa: E731
    assert strip(log_full) == strip(log_resumed)


def test_resume_after_sigkill_equals_uninterrupted(dataset, tmp_path):
    """A real kill -9 in the middle of a run, then `aigi train --resume`."""
    args = [str(dataset), "--backbone", "tiny-clip", "--epochs", "3", "--batch-size", "8", "--workers", "0",
            "--save-every", "3", "--precision", "fp32", "--lr", "1e-3", "-q"]
    run = lambda out, *extra: [sys.executable, "-m", "aigi.cli", "train", *args, "--out", str(out), *extra]  # noqa: E731
    subprocess.run(run(tmp_path / "full"), check=True, capture_output=True)
    proc = subprocess.Popen(run(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "last" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("step", 0) >= 9:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(run(tmp_path / "killed", "--resume"), check=True, capture_output=True)
    a, b = weights(tmp_path / "full" / "model.safetensors"), weights(tmp_path / "killed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("tune", ["linear", "last-k", "lora"])
def test_tuning_modes_train_only_what_they_should(dataset, tmp_path, tune):
    torch.manual_seed(0)
    out = train(small_config(dataset, tmp_path / tune, tune=tune, epochs=1, last_k=1, lr=1e-3))
    trained = weights(out / "model.safetensors")
    assert not any("lora" in k for k in trained), "LoRA adapters must be merged into the saved encoder"
    torch.manual_seed(0)  # the same initial weights as the run
    initial = Detector.from_backbone("tiny-clip", ["genA", "genB"]).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert {"binary_head.weight", "source_head.weight"} <= changed
    encoder_changed = {k for k in changed if k.startswith("encoder.")}
    if tune == "linear":
        assert not encoder_changed
    elif tune == "last-k":
        assert encoder_changed and all(".layers.3." in k or "post_layernorm" in k for k in encoder_changed)
    else:  # lora: only attention q/v projections move once merged
        assert encoder_changed and all("q_proj.weight" in k or "v_proj.weight" in k for k in encoder_changed)


def test_unreadable_training_files_are_skipped_and_counted(tmp_path):
    data = make_dataset(tmp_path / "data", n_per_class=24)
    names = [p for p in sorted((data / "real").iterdir())]
    for p in names[:6]:  # some land in train, some in val
        p.write_bytes(b"\xff\xd8\xff truncated")
    out = train(small_config(data, tmp_path / "run", epochs=1))
    config = json.loads((out / "config.json").read_text())
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    n_bad_train = sum(1 for r in log if r.get("event") == "decode_error")
    assert n_bad_train == config["training"]["decode_errors"] >= 1


def test_calibration_helpers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    logits = (y * 2 - 1) * 1.0 + rng.normal(0, 1, 2000)
    over_confident = 1 / (1 + np.exp(-logits * 5))
    assert 2 < fit_temperature(over_confident, y) < 3  # the Bayes-optimal logit here is 2x; 5x/2.5
    reals = rng.uniform(0, 1, 1000)
    t = threshold_for_fpr(reals, 0.05)
    assert np.mean(reals >= t) <= 0.05


def test_bad_config_is_rejected(dataset, tmp_path):
    with pytest.raises(ValueError, match="--tune"):
        train(small_config(dataset, tmp_path, tune="everything"))


def test_linear_probe_on_cached_features_equals_the_full_pipeline(dataset, tmp_path):
    kw = dict(tune="linear", augment="none", epochs=2)
    cached = train(small_config(dataset, tmp_path / "cached", **kw))
    direct = train(small_config(dataset, tmp_path / "direct", cache_features=False, **kw))
    a, b = weights(cached / "model.safetensors"), weights(direct / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    log = [json.loads(x) for x in (cached / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in log) == 2 * 5


def test_validation_leaves_training_aids_out(dataset, tmp_path):
    """Calibration is for the populations a user scores: aligned fakes (a training aid) never enter val."""
    import csv

    from aigi.io.datasets import load_dataset
    from aigi.training.loop import training_data

    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "generator", "split"])
        for i, s in enumerate(load_dataset(dataset).samples):
            w.writerow([s.display, s.label, s.generator, "val" if i % 2 else "train"])
            if s.label == 0:
                w.writerow([s.display, 1, "aligned-taesd", "val"])
    _, val = training_data(TrainConfig(data=str(manifest), split="train"))
    assert val.samples and not [s for s in val.samples if s.generator.startswith("aligned-")]
