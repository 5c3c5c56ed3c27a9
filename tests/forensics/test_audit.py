"""Tests for aigi.forensics.audit: file properties without pixels, JPEG quality from quantization
tables, and the shortcut classifier on datasets built here (PNG fakes vs JPEG reals must
warn; one encoding for both classes must not)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from aigi.forensics.audit import (WARN_AUC, audit_dataset, file_properties, format_audit, jpeg_quality, source_of, warn_if_shortcut)
from aigi.cli.main import main
from aigi.io.datasets import load_dataset
from aigi.io.samples import Sample
from synthetic import synthetic_image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write_set(root, real: dict, fake: dict, n: int = 12, seed: int = 0):
    """``real``/``fake``: {source: (format, size, save kwargs)}; ``n`` images per source."""
    rng = np.random.default_rng(seed)
    for cls, spec in (("real", real), ("fake", fake)):
        for source, (fmt, size, kw) in spec.items():
            folder = root / cls / source
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                im = synthetic_image(rng, cls == "fake", size).resize((size, size))
                (folder / f"{i:03d}.{fmt.lower()}").write_bytes(encode(im, fmt, **kw))
    return root


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95, 100])
def test_jpeg_quality_is_read_back_from_the_tables(quality):
    with Image.open(io.BytesIO(encode(Image.new("RGB", (16, 16)), "JPEG", quality=quality))) as im:
        assert jpeg_quality(im.quantization) == (quality, True)


def test_non_standard_tables_give_an_estimate():
    table = list(range(1, 65))
    with Image.open(io.BytesIO(encode(Image.new("RGB", (16, 16)), "JPEG", qtables=[table, table]))) as im:
        quality, exact = jpeg_quality(im.quantization)
    assert not exact and 1 <= quality <= 100


@pytest.mark.parametrize("subsampling, want", [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_chroma_subsampling(subsampling, want):
    props = file_properties(encode(Image.new("RGB", (32, 32)), "JPEG", subsampling=subsampling, quality=90))
    assert props["subsampling"] == want and props["format"] == "JPEG" and props["jpeg_quality"] == 90


def test_metadata_presence():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    icc = b"\x00" * 128  # presence is all that is checked; Pillow stores it as given
    props = file_properties(encode(Image.new("RGB", (8, 6)), "JPEG", exif=exif, icc_profile=icc))
    assert props["exif"] and props["icc"] and not props["xmp"] and not props["text"]
    assert (props["width"], props["height"]) == (8, 6)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "paint")
    props = file_properties(encode(Image.new("RGBA", (5, 5)), "PNG", pnginfo=info))
    assert props["text"] and not props["exif"] and props["format"] == "PNG" and props["mode"] == "RGBA"
    assert props["subsampling"] == "n/a" and props["jpeg_quality"] is None
    assert "error" in file_properties(b"not an image at all")


def test_source_of():
    assert source_of(Sample("x", "real/bsds500/a.jpg", 0, "real")) == "bsds500"
    assert source_of(Sample("x", "real/a.jpg", 0, "real")) == "real"
    assert source_of(Sample("x", "fake/sd15/v1/a.png", 1, "sd15")) == "sd15"


def test_png_fakes_vs_jpeg_reals_warns_and_names_the_format(tmp_path):
    root = write_set(tmp_path / "ds",
                     real={"phone": ("JPEG", 48, {"quality": 90}), "dslr": ("JPEG", 40, {"quality": 85})},
                     fake={"genA": ("PNG", 64, {}), "genB": ("PNG", 64, {})})
    report = audit_dataset(load_dataset(root))
    assert report["n_audited"] == 48 and report["n_errors"] == 0
    assert report["classes"]["fake"]["formats"] == {"PNG": 24} and report["classes"]["real"]["formats"] == {"JPEG": 24}
    assert {(r["class"], r["source"]) for r in report["per_source"]} == {("real", "phone"), ("real", "dslr"),
                                                                         ("fake", "genA"), ("fake", "genB")}
    sc = report["shortcut"]
    assert sc["auc"] >= WARN_AUC and sc["grouped_by"].startswith("source")
    assert sc["separating"][0]["auc"] == 1.0
    assert report["warning"] and "format" in report["warning"]
    md = format_audit(report)
    assert "WARNING" in md and "| fake | genA | 12 | PNG 100% | 64x64 (12) |" in md
    json.dumps(report)


def test_one_encoding_for_both_classes_gives_no_warning(tmp_path):
    spec = ("JPEG", 48, {"quality": 90})
    root = write_set(tmp_path / "ds", real={"a": spec, "b": spec}, fake={"genA": spec, "genB": spec}, n=15)
    report = audit_dataset(load_dataset(root))
    assert report["shortcut"]["auc"] < WARN_AUC and report["warning"] is None
    assert report["classes"]["real"]["jpeg_quality"] == {"90": 30} and report["classes"]["fake"]["subsampling"] == {"4:2:0": 30}
    assert "No shortcut found" in format_audit(report)


def test_one_source_per_class_falls_back_to_image_folds(tmp_path):
    root = write_set(tmp_path / "ds", real={"cam": ("JPEG", 32, {})}, fake={"gen": ("PNG", 32, {})}, n=10)
    report = audit_dataset(load_dataset(root))
    assert report["shortcut"]["grouped_by"].startswith("image") and report["warning"]


def test_audit_cli_writes_json_and_markdown_and_samples(tmp_path, capsys):
    root = write_set(tmp_path / "ds", real={"cam": ("JPEG", 32, {}), "cam2": ("JPEG", 32, {})},
                     fake={"genA": ("PNG", 32, {}), "genB": ("WEBP", 32, {})}, n=10)
    (root / "fake" / "genA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "audit"
    assert main(["audit", str(root), "--out", str(out), "--max-images", "30"]) == 0
    stdout, stderr = capsys.readouterr()
    report = json.loads((out / "audit.json").read_text())
    assert report["n_images"] == 41 and report["n_audited"] + report["n_errors"] == 30
    assert (out / "audit.md").read_text().strip() == stdout.strip()
    assert "| class | source |" in stdout and "WARNING" in stderr
    # The same seed gives the same sample.
    assert main(["audit", str(root), "--max-images", "30", "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "audit.json").read_text())["per_source"] == report["per_source"]
    with pytest.raises(SystemExit, match="not found"):
        main(["audit", str(tmp_path / "missing")])


def test_warn_if_shortcut_prints_to_stderr_and_returns_the_auc(tmp_path, capsys):
    root = write_set(tmp_path / "ds", real={"cam": ("JPEG", 32, {})}, fake={"gen": ("PNG", 32, {})}, n=8)
    auc = warn_if_shortcut(load_dataset(root), max_images=100)
    assert auc >= WARN_AUC and "WARNING" in capsys.readouterr().err


def test_train_warns_and_records_the_audit_auc(tmp_path, capsys):
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    root = write_set(tmp_path / "ds", real={"cam": ("JPEG", 32, {})}, fake={"gen": ("PNG", 32, {})}, n=10)
    out = train(TrainConfig(data=str(root), out=str(tmp_path / "run"), backbone="tiny-clip", epochs=1, batch_size=16,
                            workers=0, progress=False, augment="none", precision="fp32", split="all"))
    assert "WARNING: file properties alone separate" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["shortcut_audit_auc"] >= WARN_AUC
