"""aigi train under torchrun: 2 CPU processes (gloo) train what 1 process does with the same global batch.

Tolerance, and why: the two runs add the same per-sample gradients in a different order (each
rank sums its half, then gloo sums the two halves), so gradients differ by float32 rounding,
~1e-7 relative. Adam turns that into weight differences of the same relative size for every
weight whose gradient is real: at most 7e-6 measured here (tested at 5e-5), and the scores of
images agree to 2e-8 (tested at 1e-6). The exception is the attention key biases: softmax is
unchanged by adding the same number to every key, so their true gradient is exactly zero and
what they get is rounding noise, which Adam scales up to steps of about the learning rate in
both runs alike; they change no output, so they are left out of the weight comparison and
covered by the score comparison. tiny-clip uses LayerNorm, not BatchNorm, so no statistic
depends on how the batch is split between ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from aigi.detector.model import Detector
from aigi.training.config import TrainConfig
from aigi.training.loop import train
from aigi.training.trainset import global_batches
from synthetic import make_dataset

ARGS = dict(backbone="tiny-clip", epochs=2, batch_size=16, workers=0, augment="light", precision="fp32", lr=1e-3,
            save_every=2, progress=False)


def cli_args(data, out, **extra):
    args = [str(data), "--out", str(out), "--backbone", "tiny-clip", "--epochs", "2", "--batch-size", "16",
            "--workers", "0", "--augment", "light", "--precision", "fp32", "--lr", "1e-3", "--save-every", "2", "-q"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return args


def torchrun(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "aigi.cli", "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_global_batches_are_split_without_overlap():
    for n, start, b, world in ((100, 0, 16, 2), (37, 16, 8, 3), (5, 0, 4, 8)):
        one = global_batches(n, start, b)
        shards = [global_batches(n, start, b, r, world) for r in range(world)]
        for k, batch in enumerate(one):
            parts = [s[k] for s in shards]
            assert sorted(x for p in parts for x in p) == batch


def test_two_processes_train_what_one_does_and_resume(tmp_path):
    data = make_dataset(tmp_path / "data", n_per_class=48, generators=("genA", "genB"))
    for p in sorted((data / "real").iterdir())[:5]:  # unreadable files fall on both ranks
        p.write_bytes(b"\xff\xd8\xff truncated")
    one = train(TrainConfig(data=str(data), out=str(tmp_path / "one"), **ARGS))
    # Two ranks, killed (stopped) after step 3, then resumed: from the checkpoint of step 2.
    torchrun(*cli_args(data, tmp_path / "two", stop_after_steps=3))
    state = json.loads((tmp_path / "two" / "last" / "state.json").read_text())
    assert state["step"] == 2
    resumed = torchrun(*cli_args(data, tmp_path / "two", resume=True))
    assert resumed.stderr.count("resuming") == 1 and resumed.stderr.count("2 processes (DDP, gloo)") == 1  # rank 0 speaks
    two = tmp_path / "two"

    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    compared = [k for k in a if not k.endswith("k_proj.bias")]
    worst = max(float((a[k] - b[k]).abs().max()) for k in compared)
    assert worst < 5e-5, worst
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (one, two))
    assert cb["training"]["processes"] == 2 and cb["training"]["backend"] == "gloo"
    assert ca["training"]["decode_errors"] == cb["training"]["decode_errors"] > 0
    assert ca["training"]["steps"] == cb["training"]["steps"]
    assert abs(ca["temperature"] - cb["temperature"]) < 1e-6
    assert ca["metrics"]["val"]["auc"] == pytest.approx(cb["metrics"]["val"]["auc"], abs=1e-9)
    log_a = [json.loads(x) for x in (one / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (two / "log.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in log_a] == [r.get("step") for r in log_b]  # one log, written by rank 0
    for ra, rb in zip(log_a, log_b):
        if "loss" in ra:
            assert abs(ra["loss"] - rb["loss"]) < 1e-4 and ra["acc"] == rb["acc"]
    images = sorted(str(p) for p in (data / "fake").rglob("*.png"))[:24]
    pa = np.array([p.p_fake for p in Detector.from_pretrained(one).predict(images)])
    pb = np.array([p.p_fake for p in Detector.from_pretrained(two).predict(images)])
    assert np.abs(pa - pb).max() < 1e-6
