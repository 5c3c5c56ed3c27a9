"""Tuning modes: what of a detector trains (``--tune full|last-k|lora|linear|probe|top-k``), and how fast.

:func:`configure_tuning` freezes or wraps the encoder for the mode (heads always train),
:func:`make_optimizer` puts what is left trainable into Adam (heads at ``head_lr``, the encoder
at its own rate), :func:`lr_schedule` warms up then decays, and :func:`merged_copy` gives the
plain detector to save (LoRA adapters merged into the encoder weights).
"""

from __future__ import annotations

import copy
import math

import torch

from ..detector.model import Detector
from .config import TrainConfig


def configure_tuning(detector: Detector, cfg: TrainConfig) -> None:
    """Freeze / wrap the encoder for the tuning mode. Heads always train."""
    encoder = detector.encoder
    if cfg.tune == "full":
        encoder.requires_grad_(True)
    elif cfg.tune in ("linear", "probe"):
        encoder.requires_grad_(False)
    elif cfg.tune in ("last-k", "top-k"):
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


__all__ = ["configure_tuning", "count_parameters", "lr_schedule", "make_optimizer", "merged_copy"]
