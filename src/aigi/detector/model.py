"""The detector: an image encoder with two linear heads, saved as config.json + model.safetensors.

- the binary head gives one logit: p_fake = sigmoid(logit / temperature);
- the source head gives one logit per label: ``"real"`` plus one per generator seen in training.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..encoders.backbones import encoder_from_config, load_backbone
from ..encoders.base import Encoder
from ..io.preprocessing import Preprocessing
from ..io.samples import REAL
from .devices import resolve_device
from .registry import CONFIG_NAME, PUBLISHED_ARCHITECTURE, WEIGHTS_NAME, resolve_model_path
from .scoring import ScoringMixin


@dataclass
class DetectorOutput:
    binary_logits: torch.Tensor  # (B,)
    source_logits: torch.Tensor  # (B, n_labels)


class Detector(ScoringMixin, nn.Module):
    """Encoder -> pooled features -> binary head (real vs AI-generated) and source head."""

    def __init__(self, encoder: Encoder, preprocessing: Preprocessing, labels: Sequence[str], config: dict | None = None):
        super().__init__()
        if not labels or labels[0] != REAL:
            raise ValueError(f"labels must start with {REAL!r}, got {list(labels)}")
        self.encoder = encoder
        self.preprocessing = preprocessing
        self.labels = list(labels)
        self.binary_head = nn.Linear(encoder.feature_dim, 1)
        self.source_head = nn.Linear(encoder.feature_dim, len(self.labels))
        self.config = {"threshold": 0.5, "temperature": 1.0, **(config or {})}
        self.name_or_path: str = str(self.config.get("backbone", ""))
        self.weights_path: Path | None = None  # the file its weights were read from, if one

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, backbone: str, generators: Sequence[str], image_size: int | None = None,
                      native: bool = True, crops: int = 4, min_side: int = 32,
                      scales: Sequence[float] = (1.0,)) -> "Detector":
        """A new detector on a pretrained backbone, with freshly initialised heads.

        ``native``: the model sees ``image_size`` px crops at the image's own pixels (default
        size: the backbone's input), ``crops`` of them per image at inference; otherwise the
        whole image resized, as the backbone's own preprocessing says (aigi 0.1's models)."""
        encoder, prep = load_backbone(backbone, image_size=image_size)
        if native:
            prep = prep.native_crops(image_size or prep.crop, crops=crops, min_side=min_side, scales=tuple(scales))
        return cls(encoder, prep, [REAL, *sorted(generators)], {"backbone": backbone})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu") -> "Detector":
        """Load a saved detector (a directory or a registered name). Never unpickles.

        :class:`~aigi.detector.registry.UnknownModelError` for a name that is neither, and
        :class:`~aigi.detector.devices.DeviceError` for a device this machine cannot run it on
        (both checked before any weight is read)."""
        device = resolve_device(device)
        path = resolve_model_path(name_or_path)
        with open(path / CONFIG_NAME, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("architecture") == PUBLISHED_ARCHITECTURE:  # a published head on hub weights (univfd)
            from .published import load_published

            return load_published(cls, path, config, device)
        if config.get("architecture") != "aigi.Detector":
            raise ValueError(f"{path / CONFIG_NAME} is not an aigi detector config")
        encoder = encoder_from_config(config["backbone_config"])
        prep = Preprocessing.from_dict(config["preprocessing"])
        model = cls(encoder, prep, config["labels"], config)
        state = load_file(str(path / WEIGHTS_NAME))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        model.name_or_path, model.weights_path = str(name_or_path), path / WEIGHTS_NAME  # what made it (aigi embed)
        return model.to(device).eval()

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``config.json`` and ``model.safetensors`` atomically (a kill never leaves half a file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Only floating tensors take ``dtype`` (fp16 halves a bundled model); counters stay integers.
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "aigi_version": __version__})
        os.replace(tmp, directory / WEIGHTS_NAME)
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(self.to_config(), indent=2, default=json_default) + "\n", encoding="utf-8")
        os.replace(tmp, directory / CONFIG_NAME)
        return directory

    def to_config(self) -> dict:
        return {
            **self.config,
            "architecture": "aigi.Detector",
            "aigi_version": __version__,
            "backbone_config": self.encoder.config.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "labels": self.labels,
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ computation

    def forward(self, pixel_values: torch.Tensor) -> DetectorOutput:
        return self.heads(self.encoder(pixel_values))

    def heads(self, features: torch.Tensor) -> DetectorOutput:
        """Pooled features -> both heads (training on cached features starts here)."""
        return DetectorOutput(self.binary_head(features).squeeze(-1), self.source_head(features))

    @torch.inference_mode()
    def crop_features(self, pixel_values: torch.Tensor | np.ndarray, autocast: bool = False) -> np.ndarray:
        """A batch of crops -> the encoder's pooled features (B, feature_dim), float32 numpy:
        what both heads see. Heads are linear, so an image's logits are the heads of the mean
        of its crops' features (:mod:`aigi.inference.embed`)."""
        x = torch.as_tensor(pixel_values).to(self.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            features = self.encoder(x)
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def crop_logits(self, pixel_values: torch.Tensor | np.ndarray, autocast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A batch of crops -> (binary logits (B,), source logits (B, n_labels)) as float64 numpy."""
        x = torch.as_tensor(pixel_values).to(self.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = self(x)
        return out.binary_logits.double().cpu().numpy(), out.source_logits.double().cpu().numpy()


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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


__all__ = ["Detector", "DetectorOutput", "json_default", "use_bf16"]
