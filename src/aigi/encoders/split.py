"""A ViT cut in two: the frozen first blocks, and the last ``k`` that ``--tune top-k`` trains.

``bottom(pixels)`` runs the embeddings and the first ``n - k`` blocks and returns what the rest
needs (the tokens, plus anything read on the way: the middle class tokens of a
:class:`~aigi.encoders.pooled.TokenStatsEncoder`); ``top(state)`` runs the last ``k`` blocks,
the final layer norm and the encoder's own pooling. ``top(bottom(x))`` equals ``encoder(x)``
(checked by a test), so a model trained this way is saved and used as an ordinary detector.
DINOv2-style models (``embeddings``, ``encoder.layer``, ``layernorm``) are supported.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .base import Encoder
from .pooled import TokenStatsEncoder

State = dict[str, torch.Tensor]


def _parts(encoder: Encoder) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    model = encoder.model
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not (hasattr(model, "embeddings") and isinstance(layers, nn.ModuleList) and hasattr(model, "layernorm")):
        raise ValueError(f"--tune top-k needs a DINOv2-style ViT (embeddings, encoder.layer, layernorm); "
                         f"{type(model).__name__} is not one")
    return model.embeddings, layers, model.layernorm


def split_encoder(encoder: Encoder, k: int) -> tuple[Callable[[torch.Tensor], State], Callable[[State], torch.Tensor], list[nn.Module]]:
    """(bottom, top, the modules top trains) of ``encoder`` with its last ``k`` blocks on top."""
    embeddings, layers, norm = _parts(encoder)
    n = len(layers)
    if not 0 < k < n:
        raise ValueError(f"--last-k must lie in 1..{n - 1} for a {n}-block ViT, got {k}")
    stat_layers = encoder.layers if isinstance(encoder, TokenStatsEncoder) else ()
    if any(i > n - k for i in stat_layers):
        raise ValueError(f"token statistics read after blocks {stat_layers}: train at most the last {n - max(stat_layers)} blocks")

    def bottom(pixels: torch.Tensor) -> State:
        x = embeddings(pixels)
        middle = []
        for i, layer in enumerate(layers[: n - k], start=1):
            x = layer(x)
            if i in stat_layers:
                middle.append(x[:, 0])
        state = {"tokens": x}
        if middle:
            state["middle"] = torch.cat(middle, dim=1)
        return state

    def top(state: State) -> torch.Tensor:
        x = state["tokens"]
        for layer in layers[n - k:]:
            x = layer(x)
        x = norm(x)
        if not stat_layers:
            return x[:, 0]
        patches = x[:, 1:].float()
        return torch.cat([state["middle"].to(x.dtype), x[:, 0], patches.mean(1), patches.std(1)], dim=1)

    return bottom, top, [*layers[n - k:], norm]


__all__ = ["split_encoder"]
