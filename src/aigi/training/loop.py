"""Training: fine-tune an encoder with binary and source heads (the paper's recipe by default).

The model sees native-resolution crops (:mod:`aigi.io.inputs`), drawn by source- and
size-balanced sampling with augmentations applied to real and fake alike (:mod:`aigi.training.trainset`).

Tuning modes: ``full`` (every weight; the paper: Adam, 12 epochs), ``last-k`` (the last k
transformer blocks), ``lora`` (low-rank adapters via peft, merged into the saved model) and
``linear`` (frozen encoder, heads only; UnivFD-style).

Output directory::

    OUT/config.json, OUT/model.safetensors   best epoch by validation (a loadable Detector)
    OUT/last/                                  resume checkpoint (weights, optimizer, RNG, state)
    OUT/log.jsonl                              one line per step and per epoch

Every random choice derives from ``seed``: the epoch's draws from (seed, epoch), each
draw's crop and augmentation from (seed, epoch, draw). With the model weights, optimizer moments
and torch RNG saved in the checkpoint, a resumed run computes exactly what an uninterrupted
one does.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..detector.model import Detector, use_bf16
from ..detector.scoring import is_training_aid
from ..evaluation.evaluate import evaluate
from ..forensics.audit import warn_if_shortcut
from ..io.datasets import ImageDataset, load_datasets
from ..io.splits import manifest_roots
from . import ddp
from .calibration import calibrate
from .checkpoint import load_checkpoint, recover_interrupted_save, save_checkpoint
from .config import TrainConfig
from .probe import train_probe
from .topk import train_top
from .trainset import FeatureCache, TrainingImages, draw_order, draw_weights, image_side, make_loader
from .tuning import configure_tuning, count_parameters, lr_schedule, make_optimizer, merged_copy

# ----------------------------------------------------------------------------- data


def training_data(cfg: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    """The train and validation sets. Validation is always the public ``val`` split, and never
    overlaps training: with ``--split all`` the val split is held out of training (and said so)."""
    train_set = load_datasets(cfg.data, cfg.split)
    if cfg.split == "all":
        train_set.samples = [s for s in train_set.samples if s.split != "val"]
        print("aigi train: --split all trains on the train and test splits; the val split (1 in 10 files) "
              "is held out to choose the best epoch and to calibrate", file=sys.stderr)
    train_set = train_set.subset(cfg.max_images, cfg.seed)
    max_val = cfg.max_val_images or (max(200, cfg.max_images // 4) if cfg.max_images else None)
    val_set = load_datasets(cfg.data, "val")
    # Calibration and the choice of epoch are for the populations a user scores: camera photos and
    # generators' images; training aids (aligned fakes) are left out of validation.
    val_set.samples = [s for s in val_set.samples if not is_training_aid(s.generator)]
    val_set = val_set.subset(max_val, cfg.seed)
    if len(train_set) == 0:
        raise ValueError(f"{cfg.data}: the {cfg.split} split is empty")
    return train_set, val_set


def epoch_weights(train_set: ImageDataset, detector: Detector, cfg: TrainConfig) -> np.ndarray:
    """Draw probabilities (:func:`aigi.training.trainset.draw_weights`); size bands by image header."""
    if detector.preprocessing.native:
        small = np.array([image_side(s) < detector.preprocessing.crop for s in train_set.samples])
    else:
        small = np.zeros(len(train_set), dtype=bool)
    return draw_weights(train_set.samples, small, cfg.small_share, cfg.source_power)


# ----------------------------------------------------------------------------- validation


def validate(detector: Detector, dataset: ImageDataset, cfg: TrainConfig, autocast: bool) -> dict:
    metrics, predictions = evaluate(detector, dataset, batch_size=cfg.batch_size, workers=max(1, cfg.workers),
                                    autocast=autocast, progress=False)
    scored = [(p, s.label) for p, s in zip(predictions, dataset.samples) if p.p_fake is not None]
    metrics["p_fake"], metrics["y"] = [p.p_fake for p, _ in scored], [y for _, y in scored]
    # The source head's probabilities, for the open-set rule of aigi.training.calibration.
    metrics["generator_probs"] = [[p.generator_probs.get(k, 0.0) for k in detector.labels] for p, _ in scored]
    return metrics


def train_step(detector: Detector, optimizer: torch.optim.Optimizer, batch: dict, source_loss_weight: float,
               device: torch.device, autocast: bool, forward: torch.nn.Module | None = None,
               share: float = 1.0) -> tuple[float, float]:
    """One optimizer step on a batch of pixels (or cached features); returns (loss, binary accuracy).

    Under DDP (:mod:`aigi.training.ddp`) ``forward`` is the wrapped model and ``share`` scales this rank's
    loss so that the averaged gradient is the global batch's mean (1.0 in one process)."""
    y, src = batch["label"].to(device), batch["source"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        features = "features" in batch
        x = (batch["features"] if features else batch["pixels"]).to(device)
        if forward is not None:
            binary_logits, source_logits = forward(x, features=features)
        else:
            out = detector.heads(x) if features else detector(x)
            binary_logits, source_logits = out.binary_logits, out.source_logits
    binary_logits, source_logits = binary_logits.float(), source_logits.float()
    loss = F.binary_cross_entropy_with_logits(binary_logits, y)
    loss = loss + source_loss_weight * F.cross_entropy(source_logits, src)
    optimizer.zero_grad(set_to_none=True)
    (loss if share == 1.0 else loss * share).backward()
    optimizer.step()
    return loss.item(), ((binary_logits > 0).float() == y).float().mean().item()


def _placeholder_batch(detector: Detector, cached: bool) -> dict:
    """Two zero inputs (BatchNorm needs two) for a rank with no readable sample in a step; its
    loss gets weight 0, but DDP's gradient all-reduce needs every rank's backward."""
    crop = detector.preprocessing.crop
    x = torch.zeros(2, detector.encoder.feature_dim) if cached else torch.zeros(2, 3, crop, crop)
    return {"features" if cached else "pixels": x, "label": torch.zeros(2), "source": torch.zeros(2, dtype=torch.long),
            "errors": []}


def train(cfg: TrainConfig) -> Path:
    """Train a detector as ``cfg`` says; returns the output directory (a loadable Detector)."""
    cfg.validate()
    dist = ddp.from_env()  # under torchrun: this rank's place in the job (aigi.training.ddp)
    main = dist.main
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last_dir = out / "last"
    if main:
        recover_interrupted_save(last_dir)
    dist.barrier()
    if cfg.resume and not (last_dir / "state.json").exists():
        if main:
            print(f"aigi train: no checkpoint in {last_dir}; starting from scratch", file=sys.stderr)
        cfg.resume = False
    if cfg.resume:  # the run's own settings win over the command line, but for where to stop
        saved = json.loads((out / "train_config.json").read_text())
        cfg = TrainConfig(**{**saved, "resume": True, "progress": cfg.progress, "stop_after_steps": cfg.stop_after_steps,
                             "epochs": cfg.epochs})
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    train_set, val_set = training_data(cfg)
    shortcut_auc = warn_if_shortcut(train_set, seed=cfg.seed) if main else None  # file properties alone separate the classes?
    detector = Detector.from_backbone(cfg.backbone, train_set.generators, cfg.image_size, native=cfg.native,
                                      crops=cfg.crops, min_side=cfg.min_side, scales=cfg.scales)
    configure_tuning(detector, cfg)
    device = dist.device
    detector.to(device)
    autocast = use_bf16(cfg.precision, device)
    weights = epoch_weights(train_set, detector, cfg)
    n_draws = cfg.epoch_images or len(train_set)

    optimizer = make_optimizer(detector, cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = math.ceil(n_draws / cfg.batch_size)
    lr_factor = lr_schedule(cfg.epochs * steps_per_epoch, cfg.warmup)

    step, epoch, start_step, best, history, n_errors = 0, 0, 0, None, [], 0
    if cfg.resume:
        state = load_checkpoint(last_dir, detector, optimizer)
        step, epoch, start_step = state["step"], state["epoch"], state["step_in_epoch"]
        best, history, n_errors = state["best"], state["history"], state["n_errors"]
        if main:
            _truncate_log(out / "log.jsonl", step)
            print(f"aigi train: resuming {out} at epoch {epoch + 1}, step {step}", file=sys.stderr)
    elif main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (out / "log.jsonl").write_text("")
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = base
    trainable, total = count_parameters(detector)
    prep = detector.preprocessing
    seen = f"{prep.crop} px native crops" if prep.native else f"whole images at {prep.crop} px"
    procs = f", {dist.world} processes (DDP, {dist.backend})" if dist.enabled else ""
    if main:
        print(f"aigi train: {cfg.backbone} ({cfg.tune}), {trainable:,} of {total:,} parameters trainable, "
              f"{len(train_set):,} train / {len(val_set):,} val images ({n_draws:,} draws per epoch, {seen}), "
              f"labels {detector.labels}, {'bf16' if autocast else 'fp32'} on {device}{procs}", file=sys.stderr)
    forward = dist.wrap(ddp.TrainForward(detector)) if dist.enabled else None
    progress = cfg.progress and main

    images = TrainingImages(train_set, detector, cfg.augment, cfg.seed)
    if cfg.tune == "probe":  # frozen encoder, heads fitted to convergence (aigi.training.probe)
        if dist.enabled:
            raise ValueError("--tune probe runs in one process (its encoder only runs forward); drop torchrun")
        run = train_probe(detector, images, weights, cfg, out, autocast, progress)
        finish(out, cfg, train_set, val_set, {"trainable_parameters": trainable, "total_parameters": total,
                                              "shortcut_audit_auc": shortcut_auc, **run})
        return out
    if cfg.tune == "top-k":  # the last blocks trained on cached tokens of the frozen first ones (aigi.training.topk)
        if dist.enabled:
            raise ValueError("--tune top-k runs in one process; drop torchrun (or use --tune last-k under torchrun)")
        run = train_top(detector, images, weights, cfg, out, autocast, progress)
        finish(out, cfg, train_set, val_set, {"trainable_parameters": trainable, "total_parameters": total,
                                              "shortcut_audit_auc": shortcut_auc, **run})
        return out
    train_cache = val_cache = None
    if cfg.cache_features and cfg.tune == "linear" and cfg.augment == "none":
        # Every rank caches the whole train set (the encoder is frozen; each then draws its share).
        train_cache = FeatureCache(detector, train_set, cfg.batch_size, cfg.workers, autocast, "caching train features",
                                   progress)
        val_cache = FeatureCache(detector, val_set, cfg.batch_size, cfg.workers, autocast, "caching val features",
                                 progress) if main else None
    log = open(out / "log.jsonl" if main else os.devnull, "a", encoding="utf-8")  # rank 0 writes the log
    if train_cache is not None and not cfg.resume:  # the cache met every unreadable file already
        for path, reason in train_cache.errors:
            n_errors += 1
            log.write(json.dumps({"event": "decode_error", "step": 0, "path": path, "reason": reason}) + "\n")
    started = time.time()

    def checkpoint(step_in_epoch: int, epoch_now: int) -> None:
        if not main:
            return
        save_checkpoint(last_dir, detector, optimizer, {
            "step": step, "epoch": epoch_now, "step_in_epoch": step_in_epoch,
            "best": best, "history": history, "n_errors": n_errors})

    while epoch < cfg.epochs:
        detector.train()
        order = draw_order(weights, n_draws, cfg.seed, epoch)
        start_draw = start_step * cfg.batch_size
        bar = tqdm(total=n_draws, initial=min(n_draws, start_draw), unit="img",
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, dynamic_ncols=True)
        batches = (train_cache.batches(order, start_draw, cfg.batch_size, dist.rank, dist.world) if train_cache
                   else make_loader(images, order, epoch, start_draw, cfg.batch_size, cfg.workers, dist.rank, dist.world))
        for i, batch in enumerate(batches, start=start_step):
            n_local = len(batch.get("label", []))
            errors = batch["errors"]
            n_good, n_bad = dist.sum([n_local, len(errors)])  # the global batch's counts
            if dist.enabled and n_bad:
                errors = [e for rank_errors in dist.gather(errors) for e in rank_errors]
            for path, reason in errors:
                n_errors += 1
                log.write(json.dumps({"event": "decode_error", "step": step, "path": path, "reason": reason}) + "\n")
                if main:
                    tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
            if n_good:
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * lr_factor(step)
                if not n_local:  # other ranks have samples: take part with weight 0
                    batch = _placeholder_batch(detector, train_cache is not None)
                share = n_local * dist.world / n_good if dist.enabled else 1.0
                loss, acc = train_step(detector, optimizer, batch, cfg.source_loss_weight, device, autocast,
                                       forward, share)
                if dist.enabled:  # the global batch's mean loss and accuracy
                    loss_sum, correct = dist.sum([loss * n_local, acc * n_local])
                    loss, acc = loss_sum / n_good, correct / n_good
                log.write(json.dumps({"step": step, "epoch": epoch, "loss": round(loss, 6), "acc": round(acc, 4),
                                      "lr": optimizer.param_groups[-1]["lr"]}) + "\n")
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
            bar.update(int(n_good + n_bad))
            step += 1
            if cfg.save_every and step % cfg.save_every == 0 and i + 1 < steps_per_epoch:
                log.flush()
                checkpoint(i + 1, epoch)
            if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps:
                log.close()
                bar.close()
                dist.close()
                return out
        bar.close()
        start_step = 0
        if not main:  # rank 0 validates and keeps the best epoch; the others go on training
            epoch += 1
            continue

        val = val_cache.metrics(detector) if val_cache else validate(detector, val_set, cfg, autocast)
        score = val["auc"] if val.get("auc") is not None else val["accuracy"]
        record = {"event": "epoch", "epoch": epoch, "step": step, "val_accuracy": val["accuracy"], "val_auc": val.get("auc"),
                  "val_ap": val.get("ap"), "elapsed_s": round(time.time() - started, 1)}
        history.append(record)
        log.write(json.dumps(record) + "\n")
        print(f"epoch {epoch + 1}: val accuracy {val['accuracy']:.4f}, AUC {val.get('auc') or float('nan'):.4f}", file=sys.stderr)
        if best is None or score > best["score"]:
            best = {"score": score, "epoch": epoch}
            merged_copy(detector).save_pretrained(out)
        epoch += 1
        log.flush()
        checkpoint(0, epoch)
    log.close()
    if main:
        finish(out, cfg, train_set, val_set, {
            "trainable_parameters": trainable, "total_parameters": total, "steps": step, "best_epoch": best["epoch"],
            "history": history, "decode_errors": n_errors, "shortcut_audit_auc": shortcut_auc,
            **({"processes": dist.world, "backend": dist.backend} if dist.enabled else {})})
        print(f"aigi train: best epoch {best['epoch'] + 1}, saved {out}", file=sys.stderr)
    dist.close()
    return out


def data_record(cfg: TrainConfig, train_set: ImageDataset) -> dict:
    """The train set's summary, plus the datasets a CSV manifest drew on (``roots``), so that the
    split rule still knows them where the manifest itself is not shipped with the model."""
    data = train_set.summary()
    sources = cfg.data if isinstance(cfg.data, list) else [cfg.data]
    roots = [r for s in sources if str(s).lower().endswith(".csv") for r in manifest_roots(str(s))]
    if roots:
        data["roots"] = list(dict.fromkeys(roots))
    return data


def finish(out: Path, cfg: TrainConfig, train_set: ImageDataset, val_set: ImageDataset, run: dict) -> None:
    """Reload the best epoch, calibrate it on validation, and record how it was made."""
    final = Detector.from_pretrained(out)
    val = validate(final, val_set, cfg, autocast=False)
    calibration = calibrate(final, np.asarray(val["p_fake"]), np.asarray(val["y"]), cfg.target_fpr,
                            generator_probs=np.asarray(val["generator_probs"]).reshape(len(val["y"]), len(final.labels)))
    final.config["training"] = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "stop_after_steps", "resume")},
        "data": data_record(cfg, train_set), "val_data": val_set.summary(), **run, "calibration": calibration,
    }
    final.config["metrics"] = {"val": {k: v for k, v in val.items() if k not in ("p_fake", "y", "errors", "generator_probs")}}
    final.save_pretrained(out)
    if cfg.memory_mb > 0:  # pooled features of a balanced sample of train and val images, for aigi adapt
        from .memory import MEMORY_NAME, build_memory

        build_memory(final, train_set.samples, val_set.samples, cfg.memory_mb, seed=cfg.seed, batch_size=cfg.batch_size,
                     progress=cfg.progress, how="by aigi train").save(out / MEMORY_NAME)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from the kill
        if rec.get("step", 0) < step or (rec.get("event") == "epoch" and rec.get("step", 0) <= step):
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


__all__ = ["data_record", "finish", "train", "train_step", "training_data", "validate"]
