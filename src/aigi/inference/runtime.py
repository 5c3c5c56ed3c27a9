"""An onnxruntime-backed detector with the torch detector's scoring interface, and choosing a runtime.

    >>> from aigi.inference.runtime import load_runtime
    >>> detector = load_runtime("runs/tiny", runtime="onnx")     # exports once, then re-uses
    >>> detector.predict(["photo.jpg"])[0].p_fake

:class:`OnnxDetector` reads a file written by :func:`aigi.inference.export.export_onnx` and
scores as :class:`~aigi.detector.model.Detector` does (the same :class:`~aigi.detector.scoring.ScoringMixin`);
:func:`load_runtime` gives either for a model name, directory or ``.onnx`` file.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..detector.model import Detector
from ..detector.scoring import ScoringMixin
from ..io.preprocessing import Preprocessing
from .export import INPUT_NAME, INSTALL_HINT, ONNX_FORMAT_VERSION, OUTPUT_NAMES, ensure_onnx

RUNTIMES = ("torch", "onnx")


class OnnxFormatError(ValueError):
    """An ``.onnx`` file written for another version of aigi's graph contract."""


def _providers_for(device: str) -> list:
    import onnxruntime as ort

    device = str(device)
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            device_id = int(device.split(":", 1)[1]) if ":" in device else 0
            return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        warnings.warn(
            f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu); running on the CPU",
            stacklevel=3,
        )
    elif device != "cpu":
        raise ValueError(f"unknown device {device!r} for the onnx runtime; use cpu or cuda[:N]")
    return ["CPUExecutionProvider"]


class OnnxDetector(ScoringMixin):
    """A detector exported with :func:`export_onnx`, run by onnxruntime.

    It has the scoring interface of :class:`~aigi.detector.model.Detector` that prediction and
    evaluation use (``preprocessing``, ``labels``, ``threshold``, ``temperature``, ``config``,
    ``eval``, ``score_batch``, ``make_prediction``, ``predict``), so it can be passed to
    :func:`aigi.inference.detect.detect` and :func:`aigi.evaluation.evaluate.evaluate`. The graph gives raw logits;
    the temperature from the metadata is applied here, as the torch runtime applies it.
    """

    def __init__(self, session, metadata: dict[str, str], path: str | os.PathLike | None = None) -> None:
        missing = [k for k in ("aigi_labels", "aigi_preprocessing") if k not in metadata]
        if missing:
            raise ValueError(f"{path or 'model'}: not an aigi ONNX model (metadata lacks {', '.join(missing)})")
        fmt = int(json.loads(metadata.get("aigi_format", "1")))
        if fmt > ONNX_FORMAT_VERSION:
            raise OnnxFormatError(f"{path}: ONNX format {fmt} is newer than this aigi understands ({ONNX_FORMAT_VERSION}); upgrade aigi")
        if fmt < ONNX_FORMAT_VERSION:
            raise OnnxFormatError(f"{path}: ONNX format {fmt} was written by an older aigi (this one reads "
                                  f"{ONNX_FORMAT_VERSION}); export the model again: aigi export MODEL --out FILE")
        self.session = session
        self.path = Path(path) if path is not None else None
        self.metadata = dict(metadata)
        self.labels: list[str] = list(json.loads(metadata["aigi_labels"]))
        self.preprocessing = Preprocessing.from_dict(json.loads(metadata["aigi_preprocessing"]))
        config = json.loads(metadata.get("aigi_config", "{}"))
        for key in ("threshold", "temperature"):
            if f"aigi_{key}" in metadata:
                config[key] = float(json.loads(metadata[f"aigi_{key}"]))
        self.config: dict = {"threshold": 0.5, "temperature": 1.0, **config}
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(outputs):
            raise ValueError(f"{path}: expected input {INPUT_NAME} and outputs {OUTPUT_NAMES}, got {names} -> {outputs}")

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        providers: Sequence | None = None,
        threads: int | None = None,
        device: str = "cpu",
        spinning: bool = True,
    ) -> "OnnxDetector":
        """Load an exported ``.onnx`` file. ``providers`` (onnxruntime's list) overrides ``device``
        (``cpu``, or ``cuda[:N]``: CUDA first when this onnxruntime has it, else CPU with a
        warning). ``threads`` caps the CPU threads per inference (default: onnxruntime's).
        ``spinning=False`` lets idle inference threads sleep: slower for one image at a time,
        faster when decoding threads share the cores (``aigi detect``)."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"the onnx runtime needs onnxruntime: {INSTALL_HINT}") from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=list(providers) if providers else _providers_for(device)
        )
        return cls(session, session.get_modelmeta().custom_metadata_map, path)

    # ------------------------------------------------------------------ properties

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def eval(self) -> "OnnxDetector":
        return self

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, labels={self.labels}, providers={self.providers})"

    # ------------------------------------------------------------------ computation

    def crop_logits(self, pixel_values: np.ndarray | torch.Tensor, autocast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A batch of crops -> (binary logits (B,), source logits (B, n_labels)) as float64 numpy.

        ``autocast`` is accepted for interface compatibility and ignored (the graph is fp32)."""
        if isinstance(pixel_values, torch.Tensor):
            pixel_values = pixel_values.detach().cpu().numpy()
        x = np.ascontiguousarray(pixel_values, dtype=np.float32)
        crop = self.preprocessing.crop
        if x.ndim != 4 or x.shape[1:] != (3, crop, crop):
            raise ValueError(f"expected pixel_values of shape (N, 3, {crop}, {crop}), got {tuple(x.shape)}")
        if len(x) == 0:
            return np.zeros(0), np.zeros((0, len(self.labels)))
        binary, source = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return np.asarray(binary, np.float64).reshape(len(x)), np.asarray(source, np.float64).reshape(len(x), -1)


def load_runtime(
    model: str | os.PathLike, runtime: str = "torch", device: str = "cpu", threads: int | None = None,
    spinning: bool = True,
) -> Detector | OnnxDetector:
    """A detector for ``runtime``: ``torch`` (a :class:`Detector`) or ``onnx`` (an :class:`OnnxDetector`).

    ``model`` is a detector directory or registered name; for ``onnx`` it may also be a
    ``.onnx`` file, and a directory is exported to ``<dir>/model.onnx`` on first use.
    ``threads`` and ``spinning`` only apply to the onnx runtime (see :meth:`OnnxDetector.from_file`).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    path = Path(model)
    is_onnx_file = path.suffix.lower() == ".onnx" or path.is_file()
    if runtime == "torch":
        if is_onnx_file:
            raise ValueError(f"{model}: an ONNX file runs with runtime='onnx', not 'torch'")
        return Detector.from_pretrained(model, device=device)
    if is_onnx_file:
        return OnnxDetector.from_file(path, threads=threads, device=device, spinning=spinning)
    try:
        return OnnxDetector.from_file(ensure_onnx(model), threads=threads, device=device, spinning=spinning)
    except OnnxFormatError:  # an export left by an older aigi beside the weights: redo it
        return OnnxDetector.from_file(ensure_onnx(model, force=True), threads=threads, device=device, spinning=spinning)


__all__ = ["RUNTIMES", "OnnxDetector", "OnnxFormatError", "load_runtime"]
