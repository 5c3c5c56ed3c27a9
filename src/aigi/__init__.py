"""aigi: tell camera photos from AI-generated images, and which generator made them.

    >>> from aigi import Detector
    >>> detector = Detector.from_pretrained("runs/tiny")          # or "default"
    >>> detector.predict(["photo.jpg"])[0].p_fake
"""

__version__ = "0.1.0"

from .data import ImageDecodeError, load_dataset, split_of  # noqa: E402
from .model import Detector, Prediction  # noqa: E402

__all__ = ["Detector", "ImageDecodeError", "Prediction", "__version__", "load_dataset", "split_of"]
