"""ONNX export: a detector as a self-describing ``.onnx`` file (``aigi export``).

    >>> from aigi.inference.export import export_onnx
    >>> export_onnx(Detector.from_pretrained("runs/tiny"), "runs/tiny/model.onnx")

The exported graph takes ``pixel_values`` (float32, N x 3 x H x W: N crops, already
preprocessed) and returns each crop's raw ``binary_logits`` (N,) and ``source_logits`` (N, K).
Scores are made from them exactly as the torch runtime makes them (:mod:`aigi.detector.scoring`:
the mean logit over an image's crops, divided by the stored temperature). Everything a consumer
needs to feed it (crop size and rule, mean/std) and read it (labels, threshold, temperature)
is stored as JSON strings in the model's ``metadata_props`` (keys in :data:`METADATA_KEYS`),
so the ``.onnx`` file alone is a complete, loadable detector; :mod:`aigi.inference.runtime`
runs it. :func:`ensure_onnx` keeps the export of a model directory up to date.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..detector.model import Detector, json_default
from ..detector.registry import CONFIG_NAME, WEIGHTS_NAME, resolve_model_path

ONNX_NAME = "model.onnx"
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("binary_logits", "source_logits")
EXPORTERS = ("auto", "dynamo", "torchscript")
DYNAMO_MIN_OPSET = 18
# Bumped if the graph's inputs/outputs or the metadata keys change meaning
# (2: per-crop logits out, temperature applied by the runtime; 1 gave p_fake and source_probs).
ONNX_FORMAT_VERSION = 2
METADATA_KEYS = (
    "aigi_format",
    "aigi_version",
    "aigi_io",
    "aigi_preprocessing",
    "aigi_labels",
    "aigi_threshold",
    "aigi_temperature",
    "aigi_config",
)
INSTALL_HINT = "install the ONNX extra: pip install 'aigi[onnx]'"


class _ScoringGraph(nn.Module):
    """Detector -> (binary_logits, source_logits): exactly what :meth:`Detector.crop_logits` computes."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.detector(pixel_values)
        return out.binary_logits.float(), out.source_logits.float()


def _dynamo_available() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _torchscript_available() -> bool:
    """The legacy TorchScript exporter (deprecated since torch 2.9, to be removed some day)."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch.onnx._internal.torchscript_exporter") is not None or hasattr(
            torch.onnx, "utils"
        )
    except (ImportError, ValueError):
        return False


def _export_dynamo(graph: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool):
    import onnx.version_converter

    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    # The dynamo exporter writes opset 18 or later; older targets are converted below.
    native = max(opset, DYNAMO_MIN_OPSET)
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed" and similar chatter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (dummy,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=dynamic_shapes,
                opset_version=native,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    proto = program.model_proto
    if native != opset:
        try:
            proto = onnx.version_converter.convert_version(proto, opset)
        except Exception as e:
            warnings.warn(f"cannot convert the ONNX graph to opset {opset} ({type(e).__name__}: {e}); keeping opset {native}", stacklevel=3)
    return proto


def _export_torchscript(graph: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool):
    import onnx

    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The legacy exporter is deprecated (DeprecationWarning) and warns about traced
        # Python conditions (TracerWarning) that do not depend on the batch size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (dummy,),
            buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
        )
    return onnx.load_from_string(buf.getvalue())


def _metadata(detector: Detector) -> dict[str, str]:
    config = {k: v for k, v in detector.to_config().items() if k != "backbone_config"}
    config["backbone_model_type"] = getattr(detector.encoder.config, "model_type", "")
    crop = detector.preprocessing.crop
    io_contract = {
        "input": INPUT_NAME,
        "input_shape": ["batch", 3, crop, crop],
        "input_dtype": "float32",
        "outputs": {
            "binary_logits": "raw binary logit of each crop, shape (batch,); p_fake = sigmoid(mean over an "
                             "image's crops / temperature)",
            "source_logits": "raw source logits of each crop over labels, shape (batch, n_labels)",
        },
        "temperature_applied": False,
    }
    values: dict[str, Any] = {
        "aigi_format": ONNX_FORMAT_VERSION,
        "aigi_version": __version__,
        "aigi_io": io_contract,
        "aigi_preprocessing": detector.preprocessing.to_dict(),
        "aigi_labels": list(detector.labels),
        "aigi_threshold": detector.threshold,
        "aigi_temperature": detector.temperature,
        "aigi_config": config,
    }
    return {k: json.dumps(v, default=json_default) for k, v in values.items()}


def _atomic_write(data: bytes, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def export_onnx(
    detector: Detector,
    path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> Path:
    """Write ``detector`` as a self-describing ONNX model at ``path`` (atomically); returns the path.

    ``exporter`` is ``"dynamo"`` (``torch.export``-based; needs the ``onnxscript`` package),
    ``"torchscript"`` (the legacy tracer, deprecated by PyTorch but dependency-free) or
    ``"auto"``: dynamo when onnxscript is installed, falling back to torchscript if that fails.
    With ``dynamic_batch`` the batch dimension is free; otherwise the graph takes batches of 1.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from e
    available = [n for n, ok in (("dynamo", _dynamo_available()), ("torchscript", _torchscript_available())) if ok]
    if exporter == "dynamo" and "dynamo" not in available:
        raise ImportError("the dynamo ONNX exporter needs the onnxscript package: pip install onnxscript")
    if exporter == "torchscript" and "torchscript" not in available:
        raise RuntimeError(f"torch {torch.__version__} has no TorchScript ONNX exporter; use exporter='dynamo'")
    if not available:
        raise ImportError("ONNX export needs the onnxscript package with this torch: pip install onnxscript")
    not_fp32 = sorted({str(p.dtype) for p in detector.parameters() if p.dtype != torch.float32})
    if not_fp32:
        raise ValueError(f"export a float32 detector (its parameters are {', '.join(not_fp32)})")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = available if exporter == "auto" else [exporter]
    crop = detector.preprocessing.crop
    # Trace with 2 images so that no size-1 batch gets specialised into the graph.
    dummy = torch.randn(2 if dynamic_batch else 1, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    dummy = dummy.to(detector.device)
    graph = _ScoringGraph(detector)
    was_training = detector.training
    detector.eval()
    failures: list[str] = []
    proto = None
    try:
        for name in order:
            try:
                export = _export_dynamo if name == "dynamo" else _export_torchscript
                proto = export(graph, dummy, opset, dynamic_batch)
                break
            except Exception as e:  # try the next exporter, report all if none works
                failures.append(f"{name}: {type(e).__name__}: {e}")
                if name != order[-1]:
                    warnings.warn(f"ONNX {name} exporter failed ({type(e).__name__}: {e}); trying the next one", stacklevel=2)
                elif len(order) == 1:
                    raise
    finally:
        detector.train(was_training)
    if proto is None:
        raise RuntimeError("ONNX export failed with every exporter:\n  " + "\n  ".join(failures))

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, _metadata(detector))
    proto.producer_name = "aigi"
    proto.producer_version = __version__
    proto.doc_string = "aigi detector: pixel_values (crops) -> binary_logits, source_logits (see metadata aigi_*)"
    if proto.ByteSize() >= 2**31 - 1:
        raise ValueError(f"the model is {proto.ByteSize() / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit")
    _atomic_write(proto.SerializeToString(), path)
    return path


def _cache_dir() -> Path:
    root = os.environ.get("AIGI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "aigi"
    )
    return Path(root) / "onnx"


def onnx_path_for(directory: str | os.PathLike) -> Path:
    """Where the ONNX export of a detector directory lives: ``<dir>/model.onnx``, or a per-user
    cache file when the directory is not writable (e.g. the bundled model in site-packages)."""
    directory = Path(directory).resolve()
    if os.access(directory, os.W_OK):
        return directory / ONNX_NAME
    key = hashlib.sha1(str(directory).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return _cache_dir() / f"{directory.name}-{key}.onnx"


def ensure_onnx(directory: str | os.PathLike, opset: int = 17, exporter: str = "auto", force: bool = False) -> Path:
    """The ONNX export of a detector directory, (re-)exported when missing, older than the
    directory's weights or config (a recalibrated threshold lives in ``config.json``), or ``force``."""
    directory = resolve_model_path(directory)
    target = onnx_path_for(directory)
    sources = [directory / WEIGHTS_NAME, directory / CONFIG_NAME]
    newest = max(p.stat().st_mtime_ns for p in sources if p.exists())
    if not force and target.exists() and target.stat().st_mtime_ns >= newest:
        return target
    detector = Detector.from_pretrained(directory, device="cpu")
    return export_onnx(detector, target, opset=opset, exporter=exporter)


__all__ = ["METADATA_KEYS", "ONNX_FORMAT_VERSION", "ONNX_NAME", "ensure_onnx", "export_onnx", "onnx_path_for"]
