"""``--tune probe``: a frozen encoder and linear heads fitted to convergence on its features.

The UnivFD recipe, for a small data set and a CPU: the encoder never changes, so it runs once
per draw, and the heads are then fitted on all those features at once instead of by one
pass of SGD per epoch.

1. Every epoch's draws (:mod:`aigi.training.trainset`: balanced, each its own augmented crop) are
   encoded and kept: ``epochs x epoch_images`` feature rows. Each epoch's rows are saved in
   ``OUT/last/probe-<epoch>.safetensors`` as they are made, so a killed run resumes there.
2. Features are standardised (mean 0, std 1 per dimension) so that one L2 strength suits
   dimensions as different as a channel's noise level and a pooled semantic feature.
3. Both heads are fitted by full-batch L-BFGS (:func:`aigi.training.heads.fit_heads`) with L2
   ``probe_l2`` on the standardised weights, from zero.
4. The standardisation is folded into the heads (``W / std``, ``b - W . mean / std``), so the
   saved detector is an ordinary one: encoder, then two linear heads, nothing extra.

**Reusing another run's draws** (``--probe-features DIR``): the encoder is frozen, so a run on a
subset of an earlier run's images (one fold of a leave-one-out benchmark, a run without one
source) can fit its heads on the earlier run's encoded draws instead of encoding its own. Each
saved row keeps its image's path, its source label and the probability the earlier run drew it
with; this run keeps the rows of images in its own train set and weights each by
``p_this_run(image) / p_earlier_run(image)`` (importance weights), so its heads see the balance
its own draws would have had. The two runs must agree on everything that shapes a feature row
(``FEATURE_FIELDS``); images the earlier run never drew are counted and left out. Runs that draw
by augmentation *policy* (``--augment clean+jpeg+...``, one change per draw, each draw knowing its
own) need only agree on the rest: a run whose policies are a subset of the earlier run's keeps
the draws of its own policies (each augmentation ablated without encoding anything again).
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

from ..io.augment import POLICIES, policy_set
from .config import TrainConfig
from .heads import HeadFit, fit_heads
from .trainset import TrainingImages, draw_order, make_loader

if TYPE_CHECKING:
    from ..detector.model import Detector


# What shapes one encoded draw: runs that agree on these can share their draws.
FEATURE_FIELDS = ("backbone", "tune", "image_size", "native", "min_side", "scales", "augment", "seed", "precision")


def path_key(path: str) -> str:
    """Where the bytes named ``path`` are (a file, ``zip::member`` or ``folder::member``, as a
    manifest row or :attr:`Sample.display` writes it), the same however a dataset named them."""
    import os

    where, sep, member = path.partition("::")
    if sep and os.path.isdir(where):  # a member of a folder dataset is a plain file
        return os.path.realpath(os.path.join(where, member))
    return f"{os.path.realpath(where)}::{member}" if sep else os.path.realpath(path)


def image_key(sample) -> str:
    """The key :func:`path_key` gives the name of this sample."""
    import os

    return f"{os.path.realpath(sample.archive)}::{sample.path}" if sample.archive else os.path.realpath(sample.path)


def _draw_probability(weights: np.ndarray) -> np.ndarray:
    return np.asarray(weights, np.float64) / np.sum(weights)


def config_key(cfg: TrainConfig) -> str:
    import json
    from dataclasses import asdict

    return json.dumps({k: v for k, v in asdict(cfg).items()
                       if k not in ("progress", "resume", "stop_after_steps", "out", "probe_features")},
                      sort_keys=True, default=str)


def saved_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def encode_draws(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: TrainConfig,
                 work: Path, autocast: bool, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(features, labels, source indices, decode errors) of every epoch's draws (step 1). Each
    saved part also keeps, per row, the image's index and draw probability, and the paths and
    labels they index (metadata), for runs that reuse these draws."""
    import json

    n_draws = cfg.epoch_images or len(images)
    work.mkdir(parents=True, exist_ok=True)
    device = next(detector.parameters()).device
    detector.eval()
    parts, errors = [], []
    key = config_key(cfg)
    probability = _draw_probability(weights)
    for epoch in range(cfg.epochs):
        path = work / f"probe-{epoch}.safetensors"
        if path.exists() and saved_metadata(path).get("train_config") == key:  # this very run's: resume here
            parts.append(load_file(str(path)))
            continue
        order = draw_order(weights, n_draws, cfg.seed, epoch)
        feats, labels, sources, index, policies = [], [], [], [], []
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
                    index.append(batch["index"])
                    policies.append(batch["policy"])
                bar.update(len(batch.get("label", [])) + len(batch["errors"]))
        bar.close()
        image = torch.cat(index).long()
        part = {"features": torch.cat(feats), "label": torch.cat(labels), "source": torch.cat(sources), "image": image,
                "draw_probability": torch.from_numpy(probability[image.numpy()]), "policy": torch.cat(policies)}
        tmp = path.with_suffix(".tmp")
        save_file(part, str(tmp), metadata={"train_config": key, "labels": json.dumps(list(detector.labels)),
                                            "paths": json.dumps([image_key(s) for s in images.samples])})
        tmp.replace(path)
        parts.append(part)
    x = torch.cat([p["features"] for p in parts]).double().numpy()
    y = torch.cat([p["label"] for p in parts]).numpy().astype(np.float64)
    source = torch.cat([p["source"] for p in parts]).numpy().astype(np.int64)
    return x, y, source, errors


def reuse_draws(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: TrainConfig,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(features, labels, source indices, row weights, record) from an earlier run's draws
    (``cfg.probe_features``): the rows of this run's train images, importance-weighted."""
    import json

    root = Path(cfg.probe_features)
    files = sorted((root / "last").glob("probe-*.safetensors")) or sorted(root.glob("probe-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{root}: no probe-*.safetensors (the 'last' folder of an aigi train --tune probe run)")
    saved = json.loads(saved_metadata(files[0]).get("train_config") or "{}")
    mine = json.loads(config_key(cfg))
    wanted = _reusable_policies(saved, mine)
    fields = [k for k in FEATURE_FIELDS if wanted is None or k not in ("augment", "scales")]
    differ = [k for k in fields if json.dumps(saved.get(k), default=str) != json.dumps(mine.get(k), default=str)]
    if differ:
        raise ValueError(f"{root}: its draws were encoded with other {', '.join(differ)} than this run's "
                         f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}): they cannot be reused")
    probability = _draw_probability(weights)
    mine_index = {image_key(s): i for i, s in enumerate(images.samples)}
    source_index = {label: i for i, label in enumerate(detector.labels)}
    xs, ys, ss, ws, seen = [], [], [], [], set()
    for f in files:
        meta = saved_metadata(f)
        paths, labels = json.loads(meta["paths"]), json.loads(meta["labels"])
        part = load_file(str(f))
        here = np.array([mine_index.get(paths[i], -1) for i in part["image"].tolist()])
        keep = here >= 0
        if wanted is not None:  # only the draws of this run's policies
            keep &= np.isin(part["policy"].numpy(), [POLICIES.index(p) for p in wanted])
        seen.update(here[keep].tolist())
        xs.append(part["features"].double().numpy()[keep])
        ys.append(part["label"].double().numpy()[keep])
        remap = np.array([source_index.get(label, -1) for label in labels], np.int64)  # its labels -> this run's
        ss.append(remap[part["source"].long().numpy()][keep])
        ws.append(probability[here[keep]] / part["draw_probability"].double().numpy()[keep])
    w = np.concatenate(ws)
    record = {"reused_from": str(root), "rows_reused": int(len(w)), "train_images_never_drawn": int(len(images) - len(seen)),
              "epochs_reused": len(files)}
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss), w / w.sum(), record


def _reusable_policies(saved: dict, mine: dict) -> tuple[str, ...] | None:
    """This run's policies, when both runs drew by policy and the earlier one drew all of them
    (its draws of other policies are then left out); None: the runs must agree on ``augment``."""
    theirs, ours = (policy_set(str(c.get("augment", ""))) if str(c.get("augment", "")) else None for c in (saved, mine))
    if theirs is None or ours is None or not set(ours) <= set(theirs):
        return None
    return ours


def fit_probe(detector: "Detector", x: np.ndarray, y: np.ndarray, source: np.ndarray, l2: float,
              source_loss_weight: float, weight: np.ndarray | None = None) -> dict:
    """Steps 2-4: standardise, fit both heads (rows weighted by ``weight``, default equal), fold
    the standardisation into them."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    d, n_labels = x.shape[1], len(detector.labels)
    zero = HeadFit(np.zeros((1, d)), np.zeros(1), np.zeros((n_labels, d)), np.zeros(n_labels), {})
    weight = np.full(len(y), 1.0 / len(y)) if weight is None else weight
    fit = fit_heads(z, y, source, weight, zero, l2=l2, source_loss_weight=source_loss_weight)
    with torch.no_grad():
        for head, w, b in ((detector.binary_head, fit.binary_weight, fit.binary_bias),
                           (detector.source_head, fit.source_weight, fit.source_bias)):
            head.weight.copy_(torch.from_numpy(w / std))
            head.bias.copy_(torch.from_numpy(b - (w * mean / std).sum(axis=1)))
    return {**fit.info, "rows": int(len(y)), "feature_dim": int(d)}


def train_probe(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: TrainConfig, out: Path,
                autocast: bool, progress: bool) -> dict:
    """Encode the draws, fit the heads and save the detector to ``out``; returns the run's record."""
    started = time.time()
    row_weight, reused = None, {}
    if cfg.probe_features:
        x, y, source, row_weight, reused = reuse_draws(detector, images, weights, cfg)
        errors = []
        print(f"aigi train: reusing {reused['rows_reused']:,} encoded draws of {cfg.probe_features} "
              f"({reused['train_images_never_drawn']:,} train images it never drew)", file=sys.stderr)
    else:
        x, y, source, errors = encode_draws(detector, images, weights, cfg, out / "last", autocast, progress)
    encoded = time.time()
    for path, reason in errors:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    info = fit_probe(detector, x, y, source, cfg.probe_l2, cfg.source_loss_weight, row_weight)
    detector.save_pretrained(out)
    print(f"aigi train: probe fitted on {len(y):,} feature rows ({info['evaluations']} L-BFGS evaluations, "
          f"loss {info['loss_before']:.4f} -> {info['loss_after']:.4f})", file=sys.stderr)
    return {"probe": {**info, **reused, "encode_s": round(encoded - started, 1), "fit_s": round(time.time() - encoded, 1)},
            "decode_errors": len(errors), "best_epoch": cfg.epochs - 1, "history": []}
