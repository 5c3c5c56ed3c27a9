"""Encoders made of other encoders' outputs: a ViT's token statistics, and two encoders side by side.

- :class:`TokenStatsEncoder` (``--backbone stats:NAME``): a transformers ViT (DINOv2, CLIP, ...)
  read at several depths: the class token after blocks ``layers`` (a third and two thirds of the way, 4 and
  8 of a 12-block ViT:
  middle layers keep more of the low-level signal that generators leave, which the last, most
  semantic one pools away), then the final class token and the mean and standard deviation of
  the final patch tokens. ``(len(layers) + 3) * hidden`` numbers per crop.
- :class:`ConcatEncoder` (``--backbone A+B``): both encoders on the same crop, their features
  side by side, so that one linear head weighs a convnet's block statistics and a ViT's
  tokens together. Pixels arrive normalised for the first; the others' normalisation is
  restored inside (an affine map per channel), so one :class:`~aigi.io.preprocessing.Preprocessing`
  still describes the input.

Their configs are stored as a dict (``aigi_encoder``: ``token-stats`` or ``concat``) with the
parts' own configs inside, so a saved detector is rebuilt with no download.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from .base import Encoder

TOKEN_STATS = "token-stats"
CONCAT = "concat"
STATS_PREFIX = "stats:"


class _DictConfig(SimpleNamespace):
    """A config with the ``hidden_size`` / ``model_type`` / ``to_dict()`` an :class:`Encoder` config has."""

    def to_dict(self) -> dict:
        return dict(vars(self))


class TokenStatsEncoder(Encoder):
    """A ViT -> [CLS after each of ``layers``, final CLS, mean and std of the final patch tokens]."""

    def __init__(self, model: nn.Module, layers: tuple[int, ...] | None = None) -> None:
        super().__init__(model)
        n_layers = int(model.config.num_hidden_layers)
        layers = layers or (n_layers // 3, 2 * n_layers // 3)
        if any(not 0 < i < n_layers for i in layers):
            raise ValueError(f"token-stats layers must lie in 1..{n_layers - 1}, got {layers}")
        self.layers = tuple(int(i) for i in layers)
        self.feature_dim = int(model.config.hidden_size) * (len(self.layers) + 3)
        self._config = _DictConfig(aigi_encoder=TOKEN_STATS, layers=list(self.layers), hidden_size=self.feature_dim,
                                   model_type=TOKEN_STATS, vit=model.config.to_dict())

    @property
    def config(self):
        return self._config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        last = out.last_hidden_state  # after the final layer norm
        patches = last[:, 1:].float()
        middle = [out.hidden_states[i][:, 0] for i in self.layers]  # hidden_states[0] is the embedding
        return torch.cat([*middle, last[:, 0], patches.mean(1), patches.std(1)], dim=1)


class ConcatEncoder(nn.Module):
    """Several encoders on one crop, their features concatenated (see the module docstring)."""

    def __init__(self, parts: list[nn.Module], norms: list[tuple[tuple, tuple]]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.norms = [tuple(tuple(float(v) for v in t) for t in n) for n in norms]  # (mean, std) per part
        self.feature_dim = sum(int(p.feature_dim) for p in parts)
        self._config = _DictConfig(aigi_encoder=CONCAT, hidden_size=self.feature_dim, model_type=CONCAT,
                                   parts=[p.config.to_dict() for p in parts], norms=[list(map(list, n)) for n in self.norms])

    @property
    def config(self):
        return self._config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (mean0, std0), feats = self.norms[0], []
        raw = None
        for part, (mean, std) in zip(self.parts, self.norms):
            if (mean, std) == (mean0, std0):
                x = pixel_values
            else:  # back to [0, 1], then this part's own normalisation
                if raw is None:
                    raw = pixel_values * _channels(std0, pixel_values) + _channels(mean0, pixel_values)
                x = (raw - _channels(mean, pixel_values)) / _channels(std, pixel_values)
            feats.append(part(x).float())
        return torch.cat(feats, dim=1)

    def blocks(self) -> nn.ModuleList:
        raise ValueError("a concatenation of encoders is used frozen (--tune probe or linear)")

    def final_norms(self) -> list[nn.Module]:
        return []

    def lora_target_modules(self) -> list[str]:
        raise ValueError("a concatenation of encoders is used frozen (--tune probe or linear)")


def _channels(values: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


__all__ = ["CONCAT", "STATS_PREFIX", "TOKEN_STATS", "ConcatEncoder", "TokenStatsEncoder"]
