"""Training: fine-tune an encoder with binary and source heads (the paper's recipe by default).

Tuning modes: ``full`` (every weight; the paper: Adam, 12 epochs), ``last-k`` (the last k
transformer blocks), ``lora`` (low-rank adapters via peft, merged into the saved model) and
``linear`` (frozen encoder, heads only; UnivFD-style).

Output directory::

    OUT/config.json, OUT/model.safetensors   best epoch by validation (a loadable Detector)
    OUT/last/                                  resume checkpoint (weights, optimizer, RNG, state)
    OUT/log.jsonl                              one line per step and per epoch

Every random choice derives from ``seed``: the epoch's shuffle from (seed, epoch), each
image's augmentation from (seed, epoch, index). With the model weights, optimizer moments
and torch RNG saved in the checkpoint, a resumed run computes exactly what an uninterrupted
one does.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .augment import LEVELS, augment_image
from .backbones import DEFAULT_BACKBONE, FROM_SCRATCH_BACKBONES
from .data import ImageDataset, ImageDecodeError, load_datasets, read_image
from .model import Detector

TUNE_MODES = ("full", "last-k", "lora", "linear")


@dataclass
class TrainConfig:
    data: str | list[str]  # one dataset, or several trained on together
    out: str = "runs/aigi"
    split: str = "train"
    backbone: str = DEFAULT_BACKBONE
    tune: str = "full"
    epochs: int = 12
    batch_size: int = 32
    lr: float | None = None  # encoder learning rate; None picks one for the tuning mode
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of all steps spent warming up, then cosine decay
    last_k: int = 2
    lora_rank: int = 8
    image_size: int | None = None
    augment: str = "light"
    max_images: int | None = None
    max_val_images: int | None = None
    source_loss_weight: float = 0.5
    target_fpr: float | None = None
    precision: str = "auto"  # auto | bf16 | fp32
    workers: int = 1
    seed: int = 0
    cache_features: bool = True  # linear + no augmentation: encode each image once
    save_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    resume: bool = False
    progress: bool = True
    stop_after_steps: int | None = field(default=None, repr=False)  # tests: simulate a kill

    def encoder_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.backbone in FROM_SCRATCH_BACKBONES:
            return 5e-4  # random initial weights: nothing to preserve
        return {"full": 1e-5, "last-k": 3e-5, "lora": 3e-4, "linear": 0.0}[self.tune]

    def validate(self) -> None:
        if self.tune not in TUNE_MODES:
            raise ValueError(f"--tune must be one of {', '.join(TUNE_MODES)}, got {self.tune!r}")
        if self.augment not in LEVELS:
            raise ValueError(f"--augment must be one of {', '.join(LEVELS)}, got {self.augment!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError("--precision must be auto, bf16 or fp32")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be positive")


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast only where the hardware does bf16 natively (else it is slower, not faster)."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or
                getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


# ----------------------------------------------------------------------------- data


class TrainingImages(torch.utils.data.Dataset):
    """Samples -> (pixels, binary label, source index). Index ``epoch * n + i`` fixes the seed."""

    def __init__(self, dataset: ImageDataset, detector: Detector, augment: str, seed: int) -> None:
        self.samples = dataset.samples
        self.source_index = {label: i for i, label in enumerate(detector.labels)}
        self.preprocessing = detector.preprocessing
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.samples))
        sample = self.samples[i]
        try:
            im = read_image(sample, self.preprocessing.decode_size)
            im = augment_image(im, np.random.default_rng([self.seed, epoch, i]), self.augment)
            pixels = torch.from_numpy(self.preprocessing(im))
        except ImageDecodeError as e:
            return {"error": e.reason, "path": sample.display}
        return {"pixels": pixels, "label": float(sample.label), "source": self.source_index.get(sample.generator, 0)}


def collate(items: list[dict]) -> dict:
    good = [x for x in items if "pixels" in x]
    batch = {"errors": [(x["path"], x["error"]) for x in items if "error" in x]}
    if good:
        batch["pixels"] = torch.stack([x["pixels"] for x in good])
        batch["label"] = torch.tensor([x["label"] for x in good])
        batch["source"] = torch.tensor([x["source"] for x in good])
    return batch


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def make_loader(images: TrainingImages, cfg: TrainConfig, epoch: int, start_step: int) -> torch.utils.data.DataLoader:
    n = len(images)
    keys = (epoch * n + epoch_order(n, cfg.seed, epoch))[start_step * cfg.batch_size :].tolist()
    return torch.utils.data.DataLoader(
        images, batch_size=cfg.batch_size, sampler=keys, collate_fn=collate,
        num_workers=cfg.workers, persistent_workers=False, prefetch_factor=4 if cfg.workers else None,
    )


class FeatureCache:
    """Frozen-encoder features, computed once. With ``--tune linear`` and ``--augment none``
    the encoder sees the same pixels every epoch, so each epoch then costs only the heads
    (the UnivFD recipe, at a fraction of the CPU time)."""

    def __init__(self, detector: Detector, dataset: ImageDataset, cfg: TrainConfig, autocast: bool, desc: str) -> None:
        images = TrainingImages(dataset, detector, "none", cfg.seed)
        loader = torch.utils.data.DataLoader(images, batch_size=cfg.batch_size, sampler=range(len(images)),
                                             collate_fn=collate, num_workers=cfg.workers)
        device = next(detector.parameters()).device
        self.generators = np.array([s.generator for s in dataset.samples])
        self.row = np.full(len(images), -1)  # dataset index -> feature row (-1: unreadable)
        chunks, labels, sources, self.errors = [], [], [], []
        detector.eval()
        with torch.inference_mode(), tqdm(total=len(images), unit="img", desc=desc, disable=not cfg.progress) as bar:
            for start, batch in zip(range(0, len(images), cfg.batch_size), loader):
                self.errors += batch["errors"]
                bad = {p for p, _ in batch["errors"]}
                ok = [i for i in range(start, min(start + cfg.batch_size, len(images))) if dataset.samples[i].display not in bad]
                if ok:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        chunks.append(detector.encoder(batch["pixels"].to(device)).float().cpu())
                    labels.append(batch["label"])
                    sources.append(batch["source"])
                    self.row[ok] = np.arange(sum(len(c) for c in chunks) - len(ok), sum(len(c) for c in chunks))
                bar.update(len(batch.get("label", [])) + len(batch["errors"]))
        self.features = torch.cat(chunks) if chunks else torch.empty(0)
        self.labels = torch.cat(labels) if labels else torch.empty(0)
        self.sources = torch.cat(sources) if sources else torch.empty(0, dtype=torch.long)

    def batches(self, cfg: TrainConfig, epoch: int, start_step: int):
        """The same batches, in the same order, as :func:`make_loader` would give."""
        order = epoch_order(len(self.row), cfg.seed, epoch)[start_step * cfg.batch_size :]
        for k in range(0, len(order), cfg.batch_size):
            rows = [r for r in self.row[order[k : k + cfg.batch_size]] if r >= 0]
            if rows:
                yield {"errors": [], "features": self.features[rows], "label": self.labels[rows], "source": self.sources[rows]}
            else:
                yield {"errors": []}

    @torch.inference_mode()
    def metrics(self, detector: Detector) -> dict:
        from .evaluate import compute_metrics

        kept = self.row >= 0
        out = detector.heads(self.features.to(next(detector.parameters()).device))
        p_fake = torch.sigmoid(out.binary_logits.float() / detector.temperature).double().cpu().numpy()
        probs = torch.softmax(out.source_logits.float(), -1).double().cpu().numpy()
        return compute_metrics(self.labels.numpy().astype(int), p_fake, self.generators[kept],
                               probs, detector.labels, detector.threshold, n_errors=len(self.errors))


# ----------------------------------------------------------------------------- tuning modes


def configure_tuning(detector: Detector, cfg: TrainConfig) -> None:
    """Freeze / wrap the encoder for the tuning mode. Heads always train."""
    encoder = detector.encoder
    if cfg.tune == "full":
        encoder.requires_grad_(True)
    elif cfg.tune == "linear":
        encoder.requires_grad_(False)
    elif cfg.tune == "last-k":
        encoder.requires_grad_(False)
        blocks = encoder.blocks()
        for block in list(blocks)[-cfg.last_k :]:
            block.requires_grad_(True)
        for norm in encoder.final_norms():
            norm.requires_grad_(True)
    elif cfg.tune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                          target_modules=encoder.lora_target_modules())
        encoder.model = get_peft_model(encoder.model, lora)


def merged_copy(detector: Detector) -> Detector:
    """A plain detector to save: LoRA adapters merged into the encoder weights."""
    if not hasattr(detector.encoder.model, "merge_and_unload"):
        return detector
    plain = copy.deepcopy(detector)
    plain.encoder.model = plain.encoder.model.merge_and_unload()
    return plain


def count_parameters(detector: Detector) -> tuple[int, int]:
    params = list(detector.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: Path, detector: Detector, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimizer moments and RNG as safetensors, counters as JSON; written atomically."""
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in detector.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for idx, param_state in opt["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{idx}.{key}"] = torch.as_tensor(value).reshape(-1).contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


def load_checkpoint(directory: Path, detector: Detector, optimizer: torch.optim.Optimizer) -> dict:
    state = json.loads((directory / "state.json").read_text())
    detector.load_state_dict(load_file(str(directory / "model.safetensors")))
    tensors = load_file(str(directory / "optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = value.reshape(()) if key == "step" else value
    # Moments were flattened to save them; give them back their parameter's shape.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, st in opt_state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key] = st[key].reshape(params[idx].shape)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    return state


def _recover_interrupted_save(directory: Path) -> None:
    # A kill between the two renames of save_checkpoint leaves only "<dir>.old": take it back.
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and old.exists():
        os.replace(old, directory)


# ----------------------------------------------------------------------------- validation and calibration


def validate(detector: Detector, dataset: ImageDataset, cfg: TrainConfig, autocast: bool) -> dict:
    from .evaluate import evaluate

    metrics, predictions = evaluate(detector, dataset, batch_size=cfg.batch_size, workers=max(1, cfg.workers),
                                    autocast=autocast, progress=False)
    scored = [(p.p_fake, s.label) for p, s in zip(predictions, dataset.samples) if p.p_fake is not None]
    metrics["p_fake"], metrics["y"] = [p for p, _ in scored], [y for _, y in scored]
    return metrics


def fit_temperature(p_fake: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising validation log-loss of sigmoid(logit / T) (grid search; robust)."""
    p = np.clip(p_fake, 1e-7, 1 - 1e-7)
    logits = np.log(p / (1 - p))
    best_t, best_loss = 1.0, math.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 200)):
        q = np.clip(1.0 / (1.0 + np.exp(-logits / t)), 1e-7, 1 - 1e-7)
        loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t


def threshold_for_fpr(p_fake_real: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which at most ``target_fpr`` of real images are called fake."""
    if len(p_fake_real) == 0:
        return 0.5
    return float(np.quantile(p_fake_real, 1 - target_fpr, method="higher") + 1e-9)


def calibrate(detector: Detector, val_metrics: dict, cfg: TrainConfig) -> dict:
    p, y = np.asarray(val_metrics["p_fake"]), np.asarray(val_metrics["y"], dtype=float)
    if len(np.unique(y)) < 2:
        return {"method": "none", "reason": "validation split has one class"}
    t = fit_temperature(p, y) * detector.temperature
    detector.config["temperature"] = t
    info: dict = {"method": "temperature", "temperature": t, "n_val": int(len(y))}
    if cfg.target_fpr is not None:
        logits = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
        calibrated_real = 1 / (1 + np.exp(-logits[y == 0] * detector.temperature / t))
        detector.config["threshold"] = threshold_for_fpr(calibrated_real, cfg.target_fpr)
        info["target_fpr"] = cfg.target_fpr
    info["threshold"] = detector.threshold
    return info


# ----------------------------------------------------------------------------- the loop


def make_optimizer(detector: Detector, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over what ``configure_tuning`` left trainable: heads at ``head_lr``, encoder at its own."""
    head_params = list(detector.binary_head.parameters()) + list(detector.source_head.parameters())
    head_ids = {id(p) for p in head_params}
    encoder_params = [p for p in detector.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": cfg.encoder_lr()})
    return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)


def lr_schedule(total_steps: int, warmup: float):
    """step -> learning-rate factor: linear warm-up over ``warmup`` of the run, then cosine to 0."""
    warmup_steps = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def train_step(detector: Detector, optimizer: torch.optim.Optimizer, batch: dict, source_loss_weight: float,
               device: torch.device, autocast: bool) -> tuple[float, float]:
    """One optimizer step on a batch of pixels (or cached features); returns (loss, binary accuracy)."""
    y, src = batch["label"].to(device), batch["source"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if "features" in batch:
            out = detector.heads(batch["features"].to(device))
        else:
            out = detector(batch["pixels"].to(device))
    binary_logits, source_logits = out.binary_logits.float(), out.source_logits.float()
    loss = F.binary_cross_entropy_with_logits(binary_logits, y)
    loss = loss + source_loss_weight * F.cross_entropy(source_logits, src)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), ((binary_logits > 0).float() == y).float().mean().item()


def train(cfg: TrainConfig) -> Path:
    """Train a detector as ``cfg`` says; returns the output directory (a loadable Detector)."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last_dir = out / "last"
    _recover_interrupted_save(last_dir)
    if cfg.resume and not (last_dir / "state.json").exists():
        print(f"aigi train: no checkpoint in {last_dir}; starting from scratch", file=sys.stderr)
        cfg.resume = False
    if cfg.resume:  # the run's own settings win over the command line, but for where to stop
        saved = json.loads((out / "train_config.json").read_text())
        cfg = TrainConfig(**{**saved, "resume": True, "progress": cfg.progress, "stop_after_steps": cfg.stop_after_steps,
                             "epochs": cfg.epochs})
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    train_set = load_datasets(cfg.data, cfg.split).subset(cfg.max_images, cfg.seed)
    from .audit import warn_if_shortcut  # file properties that separate the classes: warn before training

    shortcut_auc = warn_if_shortcut(train_set, seed=cfg.seed)
    max_val = cfg.max_val_images or (max(200, cfg.max_images // 4) if cfg.max_images else None)
    val_set = load_datasets(cfg.data, "val").subset(max_val, cfg.seed)
    if len(train_set) == 0:
        raise ValueError(f"{cfg.data}: the train split is empty")
    detector = Detector.from_backbone(cfg.backbone, train_set.generators, cfg.image_size)
    configure_tuning(detector, cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector.to(device)
    autocast = use_bf16(cfg.precision, device)

    optimizer = make_optimizer(detector, cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    lr_factor = lr_schedule(cfg.epochs * steps_per_epoch, cfg.warmup)

    step, epoch, start_step, best, history, n_errors = 0, 0, 0, None, [], 0
    if cfg.resume:
        state = load_checkpoint(last_dir, detector, optimizer)
        step, epoch, start_step = state["step"], state["epoch"], state["step_in_epoch"]
        best, history, n_errors = state["best"], state["history"], state["n_errors"]
        _truncate_log(out / "log.jsonl", step)
        print(f"aigi train: resuming {out} at epoch {epoch + 1}, step {step}", file=sys.stderr)
    else:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (out / "log.jsonl").write_text("")
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = base
    trainable, total = count_parameters(detector)
    print(f"aigi train: {cfg.backbone} ({cfg.tune}), {trainable:,} of {total:,} parameters trainable, "
          f"{len(train_set):,} train / {len(val_set):,} val images, labels {detector.labels}, "
          f"{'bf16' if autocast else 'fp32'} on {device}", file=sys.stderr)

    images = TrainingImages(train_set, detector, cfg.augment, cfg.seed)
    train_cache = val_cache = None
    if cfg.cache_features and cfg.tune == "linear" and cfg.augment == "none":
        train_cache = FeatureCache(detector, train_set, cfg, autocast, "caching train features")
        val_cache = FeatureCache(detector, val_set, cfg, autocast, "caching val features")
    log = open(out / "log.jsonl", "a", encoding="utf-8")
    if train_cache is not None and not cfg.resume:  # the cache met every unreadable file already
        for path, reason in train_cache.errors:
            n_errors += 1
            log.write(json.dumps({"event": "decode_error", "step": 0, "path": path, "reason": reason}) + "\n")
    started = time.time()

    def checkpoint(step_in_epoch: int, epoch_now: int) -> None:
        save_checkpoint(last_dir, detector, optimizer, {
            "step": step, "epoch": epoch_now, "step_in_epoch": step_in_epoch,
            "best": best, "history": history, "n_errors": n_errors})

    while epoch < cfg.epochs:
        detector.train()
        bar = tqdm(total=len(train_set), initial=min(len(train_set), start_step * cfg.batch_size), unit="img",
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, dynamic_ncols=True)
        batches = train_cache.batches(cfg, epoch, start_step) if train_cache else make_loader(images, cfg, epoch, start_step)
        for i, batch in enumerate(batches, start=start_step):
            for path, reason in batch["errors"]:
                n_errors += 1
                log.write(json.dumps({"event": "decode_error", "step": step, "path": path, "reason": reason}) + "\n")
                tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
            if "label" in batch:
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * lr_factor(step)
                loss, acc = train_step(detector, optimizer, batch, cfg.source_loss_weight, device, autocast)
                log.write(json.dumps({"step": step, "epoch": epoch, "loss": round(loss, 6), "acc": round(acc, 4),
                                      "lr": optimizer.param_groups[-1]["lr"]}) + "\n")
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
            bar.update(len(batch.get("label", [])) + len(batch["errors"]))
            step += 1
            if cfg.save_every and step % cfg.save_every == 0 and i + 1 < steps_per_epoch:
                log.flush()
                checkpoint(i + 1, epoch)
            if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps:
                log.close()
                bar.close()
                return out
        bar.close()
        start_step = 0

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
    finish(out, cfg, train_set, val_set, {
        "trainable_parameters": trainable, "total_parameters": total, "steps": step, "best_epoch": best["epoch"],
        "history": history, "decode_errors": n_errors, "shortcut_audit_auc": shortcut_auc})
    print(f"aigi train: best epoch {best['epoch'] + 1}, saved {out}", file=sys.stderr)
    return out


def finish(out: Path, cfg: TrainConfig, train_set: ImageDataset, val_set: ImageDataset, run: dict) -> None:
    """Reload the best epoch, calibrate it on validation, and record how it was made."""
    final = Detector.from_pretrained(out)
    val = validate(final, val_set, cfg, autocast=False)
    calibration = calibrate(final, val, cfg)
    final.config["training"] = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "stop_after_steps", "resume")},
        "data": train_set.summary(), "val_data": val_set.summary(), **run, "calibration": calibration,
    }
    final.config["metrics"] = {"val": {k: v for k, v in val.items() if k not in ("p_fake", "y", "errors")}}
    final.save_pretrained(out)


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
