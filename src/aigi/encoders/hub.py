"""Hugging Face transformers encoders: hub ids, local model directories, and ``tiny-clip``.

A transformers vision model (CLIP, DINOv2, SigLIP, ...) becomes an :class:`~aigi.encoders.base.Encoder`;
its normalisation (mean/std, input size) is read from the backbone's own
``preprocessor_config.json`` (:mod:`aigi.io.preprocessing` applies it with Pillow and numpy;
no torchvision). Full CLIP checkpoints are loaded as their vision tower only.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..io.preprocessing import Preprocessing, preprocessing_from_processor_dict
from .base import Encoder

DEFAULT_BACKBONE = "openai/clip-vit-base-patch32"
TINY_CLIP = "tiny-clip"


def _read_backbone_json(name: str, filename: str) -> dict | None:
    """A JSON file of a local model directory or of a hub repository (None if absent)."""
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if not os.path.exists(path):
            return None
    else:
        from transformers.utils import cached_file

        path = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
        if path is None:
            return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tiny_clip_config(image_size: int = 32):
    """A small randomly initialised CLIP vision tower (~0.8M parameters) for tests and smoke runs."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=4,
    )


def _model_from_config_dict(d: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    d = dict(d)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    return AutoModel.from_config(config)


def hub_encoder_from_config(backbone_config: dict) -> Encoder:
    """Rebuild a transformers encoder with random weights from its saved ``config.to_dict()`` (no hub access)."""
    return Encoder(_model_from_config_dict(backbone_config))


def load_hub_encoder(name: str, image_size: int | None = None) -> tuple[Encoder, Preprocessing]:
    """``tiny-clip`` (random weights, built in code), a local directory holding a transformers
    vision model, or a Hugging Face hub id, with its pretrained weights and its preprocessing.
    ``image_size`` overrides the input resolution (position embeddings are interpolated)."""
    if name == TINY_CLIP:
        from transformers import CLIPVisionModel

        model = CLIPVisionModel(tiny_clip_config(image_size or 32))
        prep = Preprocessing(size=image_size or 32, crop=image_size or 32)
        return Encoder(model), prep

    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name)
    model_type = config.model_type
    if model_type == "clip":
        from transformers import CLIPVisionModel

        model = CLIPVisionModel.from_pretrained(name, dtype=torch.float32)
    elif model_type == "siglip":
        from transformers import SiglipVisionModel

        model = SiglipVisionModel.from_pretrained(name, dtype=torch.float32)
    else:
        model = AutoModel.from_pretrained(name, dtype=torch.float32)
    processor = _read_backbone_json(name, "preprocessor_config.json")
    if processor is not None:
        prep = preprocessing_from_processor_dict(processor)
    else:
        size = int(getattr(model.config, "image_size", 224))
        prep = Preprocessing(size=size, crop=size)
    if image_size:
        prep = prep.with_size(image_size)
    model.eval()
    return Encoder(model), prep


__all__ = ["DEFAULT_BACKBONE", "TINY_CLIP", "hub_encoder_from_config", "load_hub_encoder", "tiny_clip_config"]
