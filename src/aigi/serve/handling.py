"""Upload handling: uploaded bytes -> model input -> predictions, exactly as for files on disk.

An upload goes through the same input path as a file (:func:`aigi.forensics.evidence.load_with_evidence`:
the pixel limit on the header before any pixel, orientation, the same crops, the file's
evidence), and every call into the model goes through :func:`predict_images`.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Optional, Union

from PIL import Image

from ..detector.scoring import OperatingPoint, Prediction
from ..detector.thresholds import choose_threshold, set_decision_rules
from ..forensics.evidence import load_with_evidence
from ..io.decode import MAX_IMAGE_PIXELS
from ..io.inputs import ModelInput
from ..io.samples import ImageDecodeError
from ..io.uploads import Upload, megabytes
from .options import MAX_UPLOAD_BYTES


def decode_upload(detector: Any, name: str, data: bytes, evidence: bool = True, crops: Optional[int] = None) -> ModelInput:
    """Upload bytes -> the crops the model sees (and the file's evidence), exactly as for a file
    on disk (``crops``: in all, as ``aigi detect --crops``); ImageDecodeError if not."""
    return load_with_evidence((name, data), detector.preprocessing, crops=crops, evidence=evidence)


def predict_images(detector: Any, inputs: list[ModelInput]) -> list[Prediction]:
    """The one call into the model: model inputs -> predictions, in one batch of their crops."""
    scores = detector.score_inputs(inputs, batch_size=max(1, sum(x.n_crops for x in inputs)))
    return [detector.make_prediction(x, s) for x, s in zip(inputs, scores)]


def request_point(detector: Any, threshold: Optional[float] = None, target_fpr: Optional[float] = None):
    """The operating point of one request: the model's, or its own ``threshold`` / ``target_fpr``
    (the band re-derived around it); ValueError when the model cannot give it."""
    if threshold is None and target_fpr is None:
        return detector.operating_point
    config = {**detector.config, "threshold": choose_threshold(detector.config, threshold, target_fpr)}
    set_decision_rules(config)
    return OperatingPoint.from_config(config)


def score_uploads(detector: Any, uploads: list[tuple[str, bytes]], max_bytes: int = MAX_UPLOAD_BYTES,
                  model_lock: AbstractContextManager = nullcontext()) -> list[Prediction]:
    """(file name, bytes) pairs -> predictions in the same order; unreadable ones carry ``error``.
    The synchronous path (no batching across calls); only the forward pass holds ``model_lock``."""
    results = [Prediction(path=name) for name, _ in uploads]
    decoded: list[tuple[int, ModelInput]] = []
    for i, (name, data) in enumerate(uploads):
        try:
            if len(data) > max_bytes:
                raise ImageDecodeError(name, f"upload is over the {megabytes(max_bytes):g} MB limit")
            decoded.append((i, decode_upload(detector, name, data)))
        except ImageDecodeError as e:
            results[i].error = e.reason
    if decoded:
        with model_lock:
            predictions = predict_images(detector, [im for _, im in decoded])
        for (i, _), prediction in zip(decoded, predictions):
            prediction.path = results[i].path
            results[i] = prediction
    return results


def decode_or_error(detector: Any, upload: Upload, evidence: bool = True,
                    crops: Optional[int] = None) -> Union[ModelInput, str]:
    if upload.error:
        return upload.error
    try:
        image = decode_upload(detector, upload.name, upload.data, evidence, crops)
        upload.data = b""  # the encoded bytes are not needed while the image waits for the model
        return image
    except ImageDecodeError as e:
        return e.reason
    except Exception as e:  # one hostile file never fails the request
        return f"cannot decode ({type(e).__name__}: {e})"


def over_pixel_limit(data: bytes) -> bool:
    """Whether the header alone declares more pixels than aigi's decoder accepts."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[0] * im.size[1] > MAX_IMAGE_PIXELS
    except Image.DecompressionBombError:  # Pillow's own refusal, at twice its limit
        return True
    except Exception:
        return False


__all__ = ["decode_or_error", "decode_upload", "over_pixel_limit", "predict_images", "request_point", "score_uploads"]
