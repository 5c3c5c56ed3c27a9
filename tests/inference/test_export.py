"""ONNX export: parity with the torch detector, metadata, dynamic batch, loading, end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'aigi[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx runtime needs onnxruntime (pip install 'aigi[onnx]')")

import onnx  # noqa: E402
import torch  # noqa: E402

from aigi.detector.model import Detector  # noqa: E402
from aigi.inference import export as export_mod  # noqa: E402
from aigi.inference.detect import score_samples  # noqa: E402
from aigi.inference.export import METADATA_KEYS, export_onnx  # noqa: E402
from aigi.inference.runtime import OnnxDetector, load_runtime  # noqa: E402
from aigi.io.inputs import load_input  # noqa: E402
from aigi.io.samples import Sample  # noqa: E402

TOL = 1e-4
DINOV2 = Path(__file__).resolve().parents[2].parent / "shared" / "zoo" / "dinov2-s14-imgfocus"


def _has_dynamo() -> bool:
    return export_mod._dynamo_available()


def _has_torchscript() -> bool:
    return export_mod._torchscript_available()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny detector with a non-default threshold and temperature, saved and exported once."""
    torch.manual_seed(0)
    detector = Detector.from_backbone("tiny-clip", ["genA", "genB"])
    detector.config["threshold"] = 0.37
    detector.config["temperature"] = 1.7
    directory = detector.save_pretrained(tmp_path_factory.mktemp("det") / "tiny")
    detector = Detector.from_pretrained(directory)
    onnx_file = export_onnx(detector, directory / "exported.onnx")
    return detector, directory, onnx_file


@pytest.fixture(scope="module")
def onnx_detector(saved):
    return OnnxDetector.from_file(saved[2], threads=1)


def _random_pixels(n: int, crop: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, crop, crop)).astype(np.float32)


def _write_images(folder: Path) -> list[Path]:
    """A few photos-like images of various sizes and formats (noise over a gradient)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h, fmt) in enumerate([(64, 48, "PNG"), (50, 90, "JPEG"), (33, 33, "PNG"), (120, 70, "JPEG")]):
        grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        arr = np.clip(grad * 0.6 + rng.integers(0, 100, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"im{i}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray(arr).save(path, fmt)
        paths.append(path)
    return paths


def _assert_parity(torch_det, onnx_det, pixels):
    p_t, probs_t = torch_det.score_batch(pixels)
    p_o, probs_o = onnx_det.score_batch(pixels)
    assert p_o.dtype == np.float64 and probs_o.dtype == np.float64
    assert p_o.shape == p_t.shape and probs_o.shape == probs_t.shape
    assert np.abs(p_o - p_t).max() < TOL
    assert np.abs(probs_o - probs_t).max() < TOL
    return float(max(np.abs(p_o - p_t).max(), np.abs(probs_o - probs_t).max()))


# ----------------------------------------------------------------------------- parity


def test_parity_random_batch(saved, onnx_detector):
    detector, _, _ = saved
    _assert_parity(detector, onnx_detector, _random_pixels(4, detector.preprocessing.crop))


def test_parity_with_sleeping_threads(saved):
    """``spinning=False`` (what ``aigi detect`` uses) changes scheduling, not results."""
    detector, _, path = saved
    _assert_parity(detector, OnnxDetector.from_file(path, spinning=False), _random_pixels(4, detector.preprocessing.crop))


def test_parity_real_images(saved, onnx_detector, tmp_path):
    detector, _, _ = saved
    pixels = np.concatenate([load_input(p, onnx_detector.preprocessing).pixels for p in _write_images(tmp_path)])
    _assert_parity(detector, onnx_detector, pixels)


def test_dynamic_batch(saved, onnx_detector):
    detector, _, _ = saved
    crop = detector.preprocessing.crop
    for n in (1, 5):
        p_fake, probs = onnx_detector.score_batch(_random_pixels(n, crop, seed=n))
        assert p_fake.shape == (n,) and probs.shape == (n, 3)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    _assert_parity(detector, onnx_detector, _random_pixels(5, crop, seed=7))
    # torch tensors are accepted too; a wrong image size is a clear error.
    p_fake, _ = onnx_detector.score_batch(torch.from_numpy(_random_pixels(2, crop)))
    assert p_fake.shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        onnx_detector.score_batch(_random_pixels(2, crop + 4))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_each_exporter(saved, tmp_path, exporter):
    if exporter == "dynamo" and not _has_dynamo():
        pytest.skip("the dynamo exporter needs onnxscript (pip install onnxscript)")
    if exporter == "torchscript" and not _has_torchscript():
        pytest.skip("this torch no longer has the TorchScript ONNX exporter")
    detector, _, _ = saved
    path = export_onnx(detector, tmp_path / f"{exporter}.onnx", exporter=exporter)
    assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [17]
    _assert_parity(detector, OnnxDetector.from_file(path), _random_pixels(3, detector.preprocessing.crop))


def test_static_batch(saved, tmp_path):
    detector, _, _ = saved
    exporter = "torchscript" if _has_torchscript() else "auto"
    path = export_onnx(detector, tmp_path / "static.onnx", dynamic_batch=False, exporter=exporter)
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, detector.preprocessing.crop, detector.preprocessing.crop]


# ----------------------------------------------------------------------------- metadata


def test_metadata_round_trip(saved, onnx_detector):
    detector, _, path = saved
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert json.loads(props["aigi_labels"]) == ["real", "genA", "genB"]
    assert json.loads(props["aigi_threshold"]) == pytest.approx(0.37)
    assert json.loads(props["aigi_temperature"]) == pytest.approx(1.7)
    assert json.loads(props["aigi_preprocessing"]) == json.loads(json.dumps(detector.preprocessing.to_dict()))
    assert "backbone_config" not in json.loads(props["aigi_config"])

    assert onnx_detector.labels == detector.labels
    assert onnx_detector.generators == ["genA", "genB"]
    assert onnx_detector.threshold == pytest.approx(detector.threshold)
    assert onnx_detector.temperature == pytest.approx(detector.temperature)
    assert onnx_detector.preprocessing == detector.preprocessing
    assert onnx_detector.config["backbone"] == "tiny-clip"
    assert onnx_detector.eval() is onnx_detector


def test_not_an_aigi_model(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match="not an aigi ONNX model"):
        OnnxDetector.from_file(path)
    with pytest.raises(FileNotFoundError):
        OnnxDetector.from_file(tmp_path / "missing.onnx")


def test_cuda_request_without_cuda_falls_back(saved):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        det = OnnxDetector.from_file(saved[2], device="cuda")
    assert det.providers == ["CPUExecutionProvider"]


# ----------------------------------------------------------------------------- loading


def test_load_runtime_directory_exports_once(saved, tmp_path, monkeypatch):
    _, directory, _ = saved
    model_dir = tmp_path / "model"
    shutil.copytree(directory, model_dir, ignore=shutil.ignore_patterns("*.onnx"))
    calls = []
    real_export = export_mod.export_onnx

    def counting_export(*args, **kwargs):
        calls.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export_mod, "export_onnx", counting_export)

    first = load_runtime(str(model_dir), runtime="onnx")
    assert isinstance(first, OnnxDetector) and first.path == model_dir / "model.onnx"
    assert (model_dir / "model.onnx").is_file() and len(calls) == 1
    assert not list(model_dir.glob("*.tmp"))
    load_runtime(model_dir, runtime="onnx")
    assert len(calls) == 1  # up to date: re-used

    # New weights (or a recalibrated config) make the export stale.
    later = (model_dir / "model.onnx").stat().st_mtime_ns + 10**9
    os.utime(model_dir / "model.safetensors", ns=(later, later))
    load_runtime(model_dir, runtime="onnx")
    assert len(calls) == 2

    # An .onnx file loads directly; the torch runtime gives a Detector.
    assert isinstance(load_runtime(model_dir / "model.onnx", runtime="onnx"), OnnxDetector)
    assert isinstance(load_runtime(model_dir, runtime="torch"), Detector)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="runtime"):
        load_runtime(model_dir / "model.onnx", runtime="torch")
    with pytest.raises(ValueError, match="unknown runtime"):
        load_runtime(model_dir, runtime="tensorrt")


# ----------------------------------------------------------------------------- end to end


def test_score_samples_end_to_end(saved, onnx_detector, tmp_path):
    detector, _, _ = saved
    paths = _write_images(tmp_path / "imgs")
    corrupt = tmp_path / "imgs" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    inputs = [paths[0], corrupt, *paths[1:]]
    samples = [Sample(str(p)) for p in inputs]

    for workers in (0, 2):
        got = [pred for _, pred in score_samples(onnx_detector, samples, batch_size=2, workers=workers)]
        want = [pred for _, pred in score_samples(detector, samples, batch_size=2, workers=workers)]
        assert [p.path for p in got] == [str(p) for p in inputs]
        assert got[1].error and got[1].p_fake is None and want[1].error
        for g, w in zip(got, want):
            if g is got[1]:
                continue
            assert not g.error
            assert abs(g.p_fake - w.p_fake) < TOL
            assert g.verdict == w.verdict and g.generator == w.generator
            assert set(g.generator_probs) == set(detector.labels)

    # The convenience API shares Detector.predict: paths and PIL images, errors kept per file.
    preds = onnx_detector.predict([paths[0], corrupt, Image.new("RGB", (40, 30), (9, 90, 200))], batch_size=2)
    assert [bool(p.error) for p in preds] == [False, True, False]
    assert preds[2].path == "<image 2>"


# ----------------------------------------------------------------------------- dinov2


def test_dinov2_export(tmp_path):
    if not (DINOV2 / "config.json").is_file():
        pytest.skip(f"pretrained DINOv2 weights not found at {DINOV2} (the ../shared/zoo folder is absent)")
    detector = Detector.from_backbone(str(DINOV2), ["sd14"], image_size=112).eval()
    path = export_onnx(detector, tmp_path / "dinov2.onnx")
    onnx_det = OnnxDetector.from_file(path)
    assert onnx_det.preprocessing == detector.preprocessing and onnx_det.preprocessing.crop == 112
    _assert_parity(detector, onnx_det, _random_pixels(2, 112))
    p_fake, probs = onnx_det.score_batch(_random_pixels(3, 112, seed=3))
    assert p_fake.shape == (3,) and probs.shape == (3, 2)
