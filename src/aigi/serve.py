"""``aigi serve``: a detector behind an HTTP API (FastAPI; ``pip install 'aigi[serve]'``).

    aigi serve                                   # the bundled model on http://127.0.0.1:8000
    curl -F files=@photo.jpg -F files=@art.webp http://127.0.0.1:8000/detect

- ``GET /health``: the model, its labels, threshold and runtime.
- ``POST /detect``: one or more images as multipart ``files``. Returns
  ``{"results": [...], "threshold": t}``, one :class:`~aigi.model.Prediction` per file in
  upload order. A file that cannot be scored (not an image, truncated, over the size or
  pixel limit) gets ``error`` set and the others are still scored, as in ``aigi detect``.
- ``/docs``: the interactive OpenAPI page FastAPI generates.

Uploads go through the same path as files on disk (:func:`aigi.inputs.load_input`: the
decompression-bomb check before any pixel, orientation, the same crops), so a score does not
depend on whether an image came by HTTP or from a folder.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations at
# run time, and ``UploadFile`` is imported inside create_app (fastapi is an optional extra).
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from . import __version__
from .data import ImageDecodeError
from .inputs import ModelInput, load_input
from .scoring import Prediction

MAX_FILES_PER_REQUEST = 64
# Lower than the 256 MB aigi detect accepts from disk: a request's files are all held in memory.
MAX_UPLOAD_BYTES = 50 * 2**20


def _megabytes(n: int) -> float:
    return float(f"{n / 2**20:.3g}")


def score_uploads(detector: Any, uploads: list[tuple[str, bytes]], max_bytes: int = MAX_UPLOAD_BYTES,
                  model_lock: AbstractContextManager = nullcontext()) -> list[Prediction]:
    """(file name, bytes) pairs -> predictions in the same order; unreadable ones carry ``error``.
    Only the forward pass holds ``model_lock``: concurrent requests decode in parallel."""
    inputs: list[tuple[int, ModelInput]] = []
    results = [Prediction(path=name) for name, _ in uploads]
    for i, (name, data) in enumerate(uploads):
        try:
            if len(data) > max_bytes:
                raise ImageDecodeError(name, f"upload is over the {_megabytes(max_bytes):g} MB limit")
            inputs.append((i, load_input((name, data), detector.preprocessing)))
        except ImageDecodeError as e:
            results[i].error = e.reason
    if inputs:
        with model_lock:
            scores = detector.score_inputs([x for _, x in inputs])
        for (i, x), s in zip(inputs, scores):
            results[i] = detector.make_prediction(x, s)
    return results


def create_app(detector: Any, model_name: str = "default", max_files: int = MAX_FILES_PER_REQUEST,
               max_bytes: int = MAX_UPLOAD_BYTES):
    """A FastAPI app serving ``detector`` (a torch ``Detector`` or an ``OnnxDetector``)."""
    from fastapi import FastAPI, File, HTTPException, UploadFile

    app = FastAPI(title="aigi", version=__version__,
                  description="Tell camera photos from AI-generated images. POST images to /detect.")
    # One forward pass at a time: a single pass already uses every core, and torch modules are
    # not meant to be called from several threads at once. Decoding still runs concurrently.
    model_lock = threading.Lock()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "aigi_version": __version__, "model": model_name, "labels": detector.labels,
                "threshold": detector.threshold, "runtime": type(detector).__name__,
                "input_px": detector.preprocessing.crop, "max_files": max_files, "max_mb": _megabytes(max_bytes)}

    @app.post("/detect")
    def detect(files: list[UploadFile] = File(..., description="one or more images")) -> dict:
        # A sync endpoint: FastAPI runs it in its thread pool, so slow scoring never blocks the server loop.
        if len(files) > max_files:
            raise HTTPException(413, f"{len(files)} files in one request; the limit is {max_files}")
        uploads = [(f.filename or f"<upload {i}>", f.file.read(max_bytes + 1)) for i, f in enumerate(files)]
        results = score_uploads(detector, uploads, max_bytes, model_lock)
        return {"results": [r.to_dict() for r in results], "threshold": detector.threshold}

    return app


def serve(detector: Any, model_name: str = "default", host: str = "127.0.0.1", port: int = 8000,
          max_files: int = MAX_FILES_PER_REQUEST) -> None:
    """Serve a loaded detector with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(detector, model_name, max_files), host=host, port=port)
