"""``--tune probe``: a frozen encoder and linear heads fitted to convergence on its features.

The UnivFD recipe, for a small data set and a CPU: the encoder never changes, so it runs once
per draw, and the heads are then fitted on all those features at once instead of by one
pass of SGD per epoch.

1. Every epoch's draws (:mod:`aigi.trainset`: balanced, each its own augmented crop) are
   encoded and kept: ``epochs x epoch_images`` feature rows. Each epoch's rows are saved in
   ``OUT/last/probe-<epoch>.safetensors`` as they are made, so a killed run resumes there.
2. Features are standardised (mean 0, std 1 per dimension) so that one L2 strength suits
   dimensions as different as a channel's noise level and a pooled semantic feature.
3. Both heads are fitted by full-batch L-BFGS (:func:`aigi.adapt.fit_heads`) with L2
   ``probe_l2`` on the standardised weights, from zero.
4. The standardisation is folded into the heads (``W / std``, ``b - W . mean / std``), so the
   saved detector is an ordinary one: encoder, then two linear heads, nothing extra.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .trainset import TrainingImages, draw_order, make_loader

if TYPE_CHECKING:
    from .model import Detector
    from .train import TrainConfig


def _config_key(cfg: "TrainConfig") -> str:
    import json
    from dataclasses import asdict

    return json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("progress", "resume", "stop_after_steps", "out")},
                      sort_keys=True, default=str)


def _saved_key(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("train_config")


def encode_draws(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: "TrainConfig",
                 work: Path, autocast: bool, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(features, labels, source indices, decode errors) of every epoch's draws (step 1)."""
    n_draws = cfg.epoch_images or len(images)
    work.mkdir(parents=True, exist_ok=True)
    device = next(detector.parameters()).device
    detector.eval()
    parts, errors = [], []
    key = _config_key(cfg)
    for epoch in range(cfg.epochs):
        path = work / f"probe-{epoch}.safetensors"
        if path.exists() and _saved_key(path) == key:  # features of this very run: resume here
            parts.append(load_file(str(path)))
            continue
        order = draw_order(weights, n_draws, cfg.seed, epoch)
        feats, labels, sources = [], [], []
        bar = tqdm(total=n_draws, unit="img", desc=f"encoding draws {epoch + 1}/{cfg.epochs}", disable=not progress,
                   dynamic_ncols=True)
        with torch.inference_mode():
            for batch in make_loader(images, order, epoch, 0, cfg.batch_size, cfg.workers):
                errors += batch["errors"]
                if "pixels" in batch:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        feats.append(detector.encoder(batch["pixels"].to(device)).float().cpu())
                    labels.append(batch["label"])
                    sources.append(batch["source"])
                bar.update(len(batch.get("label", [])) + len(batch["errors"]))
        bar.close()
        part = {"features": torch.cat(feats), "label": torch.cat(labels), "source": torch.cat(sources)}
        tmp = path.with_suffix(".tmp")
        save_file(part, str(tmp), metadata={"train_config": key})
        tmp.replace(path)
        parts.append(part)
    x = torch.cat([p["features"] for p in parts]).double().numpy()
    y = torch.cat([p["label"] for p in parts]).numpy().astype(np.float64)
    source = torch.cat([p["source"] for p in parts]).numpy().astype(np.int64)
    return x, y, source, errors


def fit_probe(detector: "Detector", x: np.ndarray, y: np.ndarray, source: np.ndarray, l2: float,
              source_loss_weight: float) -> dict:
    """Steps 2-4: standardise, fit both heads, fold the standardisation into them."""
    from .adapt import HeadFit, fit_heads

    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    d, n_labels = x.shape[1], len(detector.labels)
    zero = HeadFit(np.zeros((1, d)), np.zeros(1), np.zeros((n_labels, d)), np.zeros(n_labels), {})
    fit = fit_heads(z, y, source, np.full(len(y), 1.0 / len(y)), zero, l2=l2, source_loss_weight=source_loss_weight)
    with torch.no_grad():
        for head, w, b in ((detector.binary_head, fit.binary_weight, fit.binary_bias),
                           (detector.source_head, fit.source_weight, fit.source_bias)):
            head.weight.copy_(torch.from_numpy(w / std))
            head.bias.copy_(torch.from_numpy(b - (w * mean / std).sum(axis=1)))
    return {**fit.info, "rows": int(len(y)), "feature_dim": int(d)}


def train_probe(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: "TrainConfig", out: Path,
                autocast: bool, progress: bool) -> dict:
    """Encode the draws, fit the heads and save the detector to ``out``; returns the run's record."""
    started = time.time()
    x, y, source, errors = encode_draws(detector, images, weights, cfg, out / "last", autocast, progress)
    encoded = time.time()
    for path, reason in errors:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    info = fit_probe(detector, x, y, source, cfg.probe_l2, cfg.source_loss_weight)
    detector.save_pretrained(out)
    print(f"aigi train: probe fitted on {len(y):,} feature rows ({info['evaluations']} L-BFGS evaluations, "
          f"loss {info['loss_before']:.4f} -> {info['loss_after']:.4f})", file=sys.stderr)
    return {"probe": {**info, "encode_s": round(encoded - started, 1), "fit_s": round(time.time() - encoded, 1)},
            "decode_errors": len(errors), "best_epoch": cfg.epochs - 1, "history": []}
