"""The detector: an image encoder with two linear heads, saved as config.json + model.safetensors.

- the binary head gives one logit: p_fake = sigmoid(logit / temperature);
- the source head gives one logit per label: ``"real"`` plus one per generator seen in training.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .backbones import Encoder, Preprocessing, encoder_from_config, load_backbone
from .data import REAL, ImageDecodeError, open_image

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FAKE_VERDICT, REAL_VERDICT = "ai-generated", "real"
# Registered model names -> directories. "default" is the model bundled with the package.
BUNDLED_MODELS_DIR = Path(__file__).parent / "models"


@dataclass
class Prediction:
    """The result for one image. ``error`` is set (and scores are empty) when it could not be read."""

    path: str
    p_fake: float | None = None
    verdict: str = ""
    generator: str = ""
    p_generator: float | None = None
    generator_probs: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectorOutput:
    binary_logits: torch.Tensor  # (B,)
    source_logits: torch.Tensor  # (B, n_labels)


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a registered name (``default``) -> its directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    bundled = BUNDLED_MODELS_DIR / str(name_or_path)
    if (bundled / CONFIG_NAME).exists():
        return bundled
    registered = sorted(p.name for p in BUNDLED_MODELS_DIR.glob("*") if (p / CONFIG_NAME).exists())
    raise FileNotFoundError(
        f"no model at {name_or_path!r}: not a checkpoint directory, and not a registered name "
        f"(registered: {', '.join(registered) or 'none in this install'}). "
        "Train one with `aigi train DATA --out DIR` and pass --model DIR."
    )


class ScoringMixin:
    """What every runtime shares (torch :class:`Detector`, ``aigi.export.OnnxDetector``):
    verdicts from scores, and ``predict``. Needs ``labels``, ``config``, ``preprocessing``,
    ``eval()`` and ``score_batch(pixels) -> (p_fake, source_probs)``."""

    labels: list[str]
    config: dict

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def temperature(self) -> float:
        return float(self.config.get("temperature", 1.0))

    @property
    def generators(self) -> list[str]:
        return self.labels[1:]


    def make_prediction(self, path: str, p_fake: float, source_probs: np.ndarray) -> Prediction:
        """Scores of one image -> a :class:`Prediction` (verdict by the stored threshold)."""
        fake = p_fake >= self.threshold
        generator, p_generator = "", None
        if fake and len(self.labels) > 1:
            gen_probs = source_probs[1:]
            best = int(np.argmax(gen_probs))
            generator = self.labels[1 + best]
            # Which generator, given that the image is AI-generated.
            p_generator = float(gen_probs[best] / max(gen_probs.sum(), 1e-12))
        return Prediction(
            path=path,
            p_fake=float(p_fake),
            verdict=FAKE_VERDICT if fake else REAL_VERDICT,
            generator=generator,
            p_generator=p_generator,
            generator_probs={label: float(p) for label, p in zip(self.labels, source_probs)},
        )

    def predict(
        self, images: str | os.PathLike | Image.Image | Iterable[str | os.PathLike | Image.Image], batch_size: int = 32
    ) -> list[Prediction]:
        """Score paths or PIL images; unreadable files get a Prediction with ``error`` set.

        For large folders use :func:`aigi.predict.detect`, which decodes in parallel and streams.
        """
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        self.eval()
        results: list[Prediction] = []
        batch: list[tuple[int, np.ndarray]] = []
        items = list(images)
        names = [f"<image {i}>" if isinstance(x, Image.Image) else os.fspath(x) for i, x in enumerate(items)]

        def flush() -> None:
            if not batch:
                return
            p_fake, probs = self.score_batch(np.stack([arr for _, arr in batch]))
            for (i, _), p, pr in zip(batch, p_fake, probs):
                results[i] = self.make_prediction(names[i], p, pr)
            batch.clear()

        for i, item in enumerate(items):
            results.append(Prediction(names[i]))
            try:
                batch.append((i, self.preprocessing(open_image(item, self.preprocessing.decode_size))))
            except ImageDecodeError as e:
                results[i].error = e.reason
            if len(batch) >= batch_size:
                flush()
        flush()
        return results



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

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, backbone: str, generators: Sequence[str], image_size: int | None = None) -> "Detector":
        """A new detector on a pretrained backbone, with freshly initialised heads."""
        encoder, prep = load_backbone(backbone, image_size=image_size)
        return cls(encoder, prep, [REAL, *sorted(generators)], {"backbone": backbone})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu") -> "Detector":
        """Load a saved detector (a directory or a registered name). Never unpickles."""
        path = resolve_model_path(name_or_path)
        with open(path / CONFIG_NAME, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("architecture") != "aigi.Detector":
            raise ValueError(f"{path / CONFIG_NAME} is not an aigi detector config")
        encoder = encoder_from_config(config["backbone_config"])
        prep = Preprocessing.from_dict(config["preprocessing"])
        model = cls(encoder, prep, config["labels"], config)
        state = load_file(str(path / WEIGHTS_NAME))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
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
        tmp.write_text(json.dumps(self.to_config(), indent=2, default=_json_default) + "\n", encoding="utf-8")
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
    def score_batch(self, pixel_values: torch.Tensor | np.ndarray, autocast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Pixel batch -> (p_fake (B,), source probabilities (B, n_labels)) as float64 numpy."""
        x = torch.as_tensor(pixel_values).to(self.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = self(x)
        p_fake = torch.sigmoid(out.binary_logits.float() / self.temperature)
        probs = torch.softmax(out.source_logits.float(), dim=-1)
        return p_fake.double().cpu().numpy(), probs.double().cpu().numpy()


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
