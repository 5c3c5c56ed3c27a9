"""aigi: tell camera photos from AI-generated images, and which generator made them.

    >>> from aigi import Detector
    >>> detector = Detector.from_pretrained("runs/tiny")          # or "default"
    >>> detector.predict(["photo.jpg"])[0].p_fake
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Names are imported on first use, so `import aigi.cli` does not load torch: `aigi detect`
# must set OpenMP's wait policy before torch starts its thread pool (see aigi.cli.common.prepare_threads).
_EXPORTS = {
    "Detector": "detector.model",
    "Prediction": "detector.scoring",
    "ImageDecodeError": "io.samples",
    "load_dataset": "io.datasets",
    "split_of": "io.samples",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'aigi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
