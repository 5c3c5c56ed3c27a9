"""``--tune top-k``: a ViT's last ``k`` blocks fine-tuned on cached tokens of its frozen first blocks.

On a CPU a ViT-S/14 forward pass is the whole cost of training it, and most of it is spent in
blocks that a last-blocks fine-tune keeps frozen. So, as the probe keeps features:

1. Every epoch's draws (:mod:`aigi.training.trainset`: balanced, each its own augmented crop)
   go once through the frozen part (:func:`aigi.encoders.split.split_encoder`), and what comes
   out (the tokens after block ``n - k``, float16) is kept in ``OUT/last/topk-<epoch>.safetensors``
   as it is made, so a killed run resumes there.
2. The heads start from a probe fit on the untrained top's features (linear probing first,
   then fine-tuning: the head does not wreck the pretrained blocks while it is still random).
3. The last ``k`` blocks, the final norm and both heads are trained with Adam for ``top_passes``
   passes over all kept draws (warm-up then cosine), checkpointed after each pass
   (``OUT/last/topk-train``), so that a run spanning sessions resumes at its last pass.
4. The model is saved as an ordinary detector: frozen blocks as loaded, the trained top, heads.

``top(bottom(x))`` equals the encoder's own forward pass, so the saved model scores exactly as it
trained. On a GPU the same code runs there (``--device``-free: the detector's device is used).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..encoders.split import split_encoder
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .probe import config_key, fit_probe, saved_metadata
from .trainset import TrainingImages, draw_order, make_loader
from .tuning import lr_schedule

if TYPE_CHECKING:
    from ..detector.model import Detector


def encode_states(bottom, images: TrainingImages, weights: np.ndarray, cfg: TrainConfig, work: Path, device,
                  autocast: bool, progress: bool) -> tuple[list[dict], list]:
    """Step 1: every epoch's draws through the frozen blocks, one file per epoch (resumed)."""
    n_draws = cfg.epoch_images or len(images)
    work.mkdir(parents=True, exist_ok=True)
    key = config_key(cfg)
    parts, errors = [], []
    for epoch in range(cfg.epochs):
        path = work / f"topk-{epoch}.safetensors"
        if path.exists() and saved_metadata(path).get("train_config") == key:
            parts.append(load_file(str(path)))
            continue
        chunks: dict[str, list] = {}
        bar = tqdm(total=n_draws, unit="img", desc=f"encoding draws {epoch + 1}/{cfg.epochs}", disable=not progress,
                   dynamic_ncols=True)
        with torch.inference_mode():
            for batch in make_loader(images, draw_order(weights, n_draws, cfg.seed, epoch), epoch, 0, cfg.batch_size,
                                     cfg.workers):
                errors += batch["errors"]
                if "pixels" in batch:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        state = bottom(batch["pixels"].to(device))
                    for name, value in state.items():
                        chunks.setdefault(name, []).append(value.to("cpu", torch.float16 if name == "tokens" else torch.float32))
                    for name in ("label", "source", "index", "policy"):
                        chunks.setdefault(name, []).append(batch[name])
                bar.update(len(batch.get("label", [])) + len(batch["errors"]))
        bar.close()
        part = {name: torch.cat(values).contiguous() for name, values in chunks.items()}
        tmp = path.with_suffix(".tmp")
        save_file(part, str(tmp), metadata={"train_config": key})
        tmp.replace(path)
        parts.append(part)
    return parts, errors


def _states(parts: list[dict], rows: torch.Tensor, device) -> dict:
    offsets = np.cumsum([0] + [len(p["label"]) for p in parts])
    out: dict[str, list] = {}
    for i, start in enumerate(offsets[:-1]):
        mine = rows[(rows >= start) & (rows < offsets[i + 1])] - int(start)
        if len(mine):
            for name in parts[i]:
                if name not in ("label", "source", "index", "policy"):
                    out.setdefault(name, []).append(parts[i][name][mine])
    return {name: torch.cat(values).to(device).float() for name, values in out.items()}


def _all(parts: list[dict], name: str) -> torch.Tensor:
    return torch.cat([p[name] for p in parts])


@torch.inference_mode()
def _top_features(top, parts: list[dict], device, batch: int = 64) -> np.ndarray:
    n = sum(len(p["label"]) for p in parts)
    return torch.cat([top(_states(parts, torch.arange(s, min(s + batch, n)), device)).float().cpu()
                      for s in range(0, n, batch)]).double().numpy()


def train_top(detector: "Detector", images: TrainingImages, weights: np.ndarray, cfg: TrainConfig, out: Path,
              autocast: bool, progress: bool) -> dict:
    """Steps 1-4 of the module docstring; returns the run's record."""
    started = time.time()
    device = next(detector.parameters()).device
    bottom, top, trained = split_encoder(detector.encoder, cfg.last_k)
    detector.eval()
    parts, errors = encode_states(bottom, images, weights, cfg, out / "last", device, autocast, progress)
    for path, reason in errors:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    encoded = time.time()
    y_all, src_all = _all(parts, "label").float(), _all(parts, "source").long()
    n = len(y_all)
    ckpt = out / "last" / "topk-train"
    params = [p for m in trained for p in m.parameters()]
    head_params = list(detector.binary_head.parameters()) + list(detector.source_head.parameters())
    optimizer = torch.optim.Adam([{"params": head_params, "lr": cfg.head_lr}, {"params": params, "lr": cfg.encoder_lr()}],
                                 weight_decay=cfg.weight_decay)
    steps_per_pass = math.ceil(n / cfg.batch_size)
    factor = lr_schedule(cfg.top_passes * steps_per_pass, cfg.warmup)
    base = [g["lr"] for g in optimizer.param_groups]
    done, probe_info = 0, {}
    if (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, detector, optimizer)
        done, probe_info = state["passes_done"], state.get("probe", {})
        print(f"aigi train: resuming top-k training after pass {done} of {cfg.top_passes}", file=sys.stderr)
    else:  # linear probing first: the heads fitted on the untrained top's features
        probe_info = fit_probe(detector, _top_features(top, parts, device), y_all.double().numpy(), src_all.numpy(),
                               cfg.probe_l2, cfg.source_loss_weight)
    for p in params:
        p.requires_grad_(True)
    for pass_no in range(done, cfg.top_passes):
        for m in trained:
            m.train()
        order = torch.from_numpy(np.random.default_rng([cfg.seed, pass_no, 11]).permutation(n))
        losses = []
        bar = tqdm(total=steps_per_pass, unit="step", desc=f"training the top {cfg.last_k} blocks, pass {pass_no + 1}"
                   f"/{cfg.top_passes}", disable=not progress, dynamic_ncols=True)
        for s in range(steps_per_pass):
            rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            for g, b in zip(optimizer.param_groups, base):
                g["lr"] = b * factor(pass_no * steps_per_pass + s)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                heads = detector.heads(top(_states(parts, rows, device)))
            loss = F.binary_cross_entropy_with_logits(heads.binary_logits.float(), y_all[rows].to(device))
            loss = loss + cfg.source_loss_weight * F.cross_entropy(heads.source_logits.float(), src_all[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        bar.close()
        for m in trained:
            m.eval()
        save_checkpoint(ckpt, detector, optimizer, {"passes_done": pass_no + 1, "probe": probe_info,
                                                    "mean_loss": float(np.mean(losses))})
        print(f"aigi train: top-k pass {pass_no + 1}/{cfg.top_passes}, mean loss {np.mean(losses):.4f}", file=sys.stderr)
    detector.requires_grad_(False)
    detector.save_pretrained(out)
    return {"top_k": {"blocks_trained": cfg.last_k, "passes": cfg.top_passes, "rows": int(n), "probe_start": probe_info,
                      "encode_s": round(encoded - started, 1), "train_s": round(time.time() - encoded, 1)},
            "decode_errors": len(errors), "best_epoch": cfg.epochs - 1, "history": []}


__all__ = ["encode_states", "train_top"]
