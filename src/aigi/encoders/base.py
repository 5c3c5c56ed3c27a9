"""The encoder every detector holds: a batch of pixel tensors -> one feature vector per image.

:class:`Encoder` wraps a vision model with a transformers-style ``config`` (``hidden_size``,
``model_type``, ``to_dict()``): the hub encoders (:mod:`aigi.encoders.hub`) use it as it is, the
convnets (:mod:`aigi.encoders.convnets`) and published detectors' towers
(:mod:`aigi.encoders.published`) subclass it. Its input recipe is a
:class:`~aigi.io.preprocessing.Preprocessing`.
"""

from __future__ import annotations

import torch
from torch import nn


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


__all__ = ["Encoder"]
