"""Registered model names and where models live: ``default``, ``aigi-0.1-64px``, ``univfd``.

A name given to ``--model`` (or :meth:`aigi.detector.model.Detector.from_pretrained`) is a
checkpoint directory, or the name of a directory bundled with the package under
``aigi/models/`` (``default`` is the bundled model). A directory holds ``config.json`` and
``model.safetensors``; a registered published detector (``univfd``) holds a config with
``"architecture": "aigi.PublishedDetector"`` and its head (:mod:`aigi.detector.published`).
No torch here: the CLI resolves names before anything heavy loads.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Registered model names -> directories. "default" is the model bundled with the package.
BUNDLED_MODELS_DIR = Path(__file__).parent.parent / "models"
PUBLISHED_ARCHITECTURE = "aigi.PublishedDetector"  # config.json of a registered name built from published weights
# One line per registered name for `aigi models` and `aigi detect --help`: what it is, and where
# its weights come from. Kept here, not in the models' config.json, so that listing the names
# reads no model file (and a bundled model need not be rebuilt to be described).
MODEL_SUMMARIES = {
    "default": "the bundled default: frozen EfficientNet-Lite0 block statistics + linear heads, 224 px crops at "
               "2 scales (MODEL_CARD.md); weights shipped with aigi (7 MB)",
    "aigi-0.1-64px": "the previous default: EfficientNet-Lite0 fine-tuned on whole images shrunk to 64 px (CIFAKE, "
                     "SD 1.5); weights shipped with aigi (7 MB)",
    "univfd": "UnivFD (CVPR 2023): CLIP ViT-L/14 + the authors' linear head; head shipped with aigi, CLIP weights "
              "(1.7 GB) from the Hugging Face hub or $AIGI_CLIP_VIT_L14",
}


class UnknownModelError(FileNotFoundError, ValueError):
    """A model name that is neither a checkpoint directory nor a registered name. A
    ``FileNotFoundError`` (nothing is there) and a ``ValueError`` (a bad argument) alike."""


def registered_names() -> list[str]:
    """The registered model names of this install, sorted."""
    return sorted(p.name for p in BUNDLED_MODELS_DIR.glob("*") if (p / CONFIG_NAME).exists())


def describe_model(name: str) -> str:
    """One line on a registered name: :data:`MODEL_SUMMARIES`, or what its directory says."""
    if name in MODEL_SUMMARIES:
        return MODEL_SUMMARIES[name]
    weights = "weights shipped with aigi" if (BUNDLED_MODELS_DIR / name / WEIGHTS_NAME).exists() else "published weights"
    return f"a model directory installed with aigi ({BUNDLED_MODELS_DIR / name}); {weights}"


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a registered name (``default``) -> its directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    bundled = BUNDLED_MODELS_DIR / str(name_or_path)
    if (bundled / CONFIG_NAME).exists():
        return bundled
    registered = registered_names()
    raise UnknownModelError(
        f"no model at {name_or_path!r}: not a checkpoint directory, and not a registered name "
        f"(registered: {', '.join(registered) or 'none in this install'}). "
        "Train one with `aigi train DATA --out DIR` and pass --model DIR."
    )


__all__ = ["BUNDLED_MODELS_DIR", "CONFIG_NAME", "MODEL_SUMMARIES", "PUBLISHED_ARCHITECTURE", "WEIGHTS_NAME",
           "UnknownModelError", "describe_model", "registered_names", "resolve_model_path"]
