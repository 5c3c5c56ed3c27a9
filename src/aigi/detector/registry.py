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


def registered_names() -> list[str]:
    """The registered model names of this install, sorted."""
    return sorted(p.name for p in BUNDLED_MODELS_DIR.glob("*") if (p / CONFIG_NAME).exists())


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a registered name (``default``) -> its directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    bundled = BUNDLED_MODELS_DIR / str(name_or_path)
    if (bundled / CONFIG_NAME).exists():
        return bundled
    registered = registered_names()
    raise FileNotFoundError(
        f"no model at {name_or_path!r}: not a checkpoint directory, and not a registered name "
        f"(registered: {', '.join(registered) or 'none in this install'}). "
        "Train one with `aigi train DATA --out DIR` and pass --model DIR."
    )


__all__ = ["BUNDLED_MODELS_DIR", "CONFIG_NAME", "PUBLISHED_ARCHITECTURE", "WEIGHTS_NAME", "registered_names",
           "resolve_model_path"]
