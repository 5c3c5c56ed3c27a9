"""Tests for aigi.io with everyday phone and web formats: HEIC/HEIF (pillow-heif) and AVIF.

The files are written here by pillow-heif (HEIC) and Pillow (AVIF); nothing is downloaded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from aigi.io import decode
from aigi.io.decode import decode_image, is_isobmff, read_image
from aigi.io.files import IMAGE_EXTENSIONS, iter_inputs
from aigi.io.samples import Sample

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed")


def _needs(fmt: str) -> None:
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF support")


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    if fmt == "HEIF":
        decode.register_heif_opener()  # Pillow writes HEIF through pillow-heif's plugin
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def marked_image() -> Image.Image:
    """40x20 blue with a red square in the stored top-left corner: rotations are visible."""
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 10))
    return im


def close(a, b, tol: int) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def test_heic_and_avif_are_image_extensions():
    assert {".heic", ".heif", ".avif"} <= IMAGE_EXTENSIONS


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_decode_heic_and_avif(fmt):
    _needs(fmt)
    raw = encode(Image.new("RGB", (48, 32), (200, 60, 20)), fmt, quality=90)
    assert is_isobmff(raw)
    out = decode_image(raw, f"photo.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (48, 32)
    assert close(out.getpixel((24, 16)), (200, 60, 20), 12)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation, red_corner", [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left")])
def test_decode_heic_and_avif_apply_orientation(fmt, orientation, red_corner):
    """An iPhone HEIC stores the sensor's pixels and says how to turn them (EXIF orientation,
    which pillow-heif writes as HEIF rotation boxes); decoding shows the picture upright."""
    _needs(fmt)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(marked_image(), fmt, quality=95, exif=exif.tobytes()), f"rot.{fmt.lower()}")
    w, h = out.size
    assert (w, h) == ((20, 40) if orientation in (6, 8) else (40, 20))
    corners = {"top-left": (2, 2), "top-right": (w - 3, 2), "bottom-left": (2, h - 3), "bottom-right": (w - 3, h - 3)}
    for name, xy in corners.items():
        want = (255, 0, 0) if name == red_corner else (0, 0, 255)
        assert close(out.getpixel(xy), want, 40), (fmt, orientation, name, out.getpixel(xy))


def test_heic_in_a_folder_is_found_and_read(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "IMG_0001.HEIC").write_bytes(encode(Image.new("RGB", (16, 16), (10, 200, 10)), "HEIF"))
    (tmp_path / "real" / "b.avif").write_bytes(encode(Image.new("RGB", (16, 16), (10, 10, 200)), "AVIF") if features.check("avif") else b"")
    found = sorted(s.relpath for s in iter_inputs([tmp_path]))
    assert found == ["real/IMG_0001.HEIC", "real/b.avif"]
    im = read_image(Sample(str(tmp_path / "real" / "IMG_0001.HEIC")))
    assert close(im.getpixel((8, 8)), (10, 200, 10), 12)


def test_truncated_heic_is_a_clear_error():
    raw = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "HEIF")
    with pytest.raises(decode.ImageDecodeError) as e:
        decode_image(raw[: len(raw) // 2], "cut.heic")
    assert e.value.path == "cut.heic" and e.value.reason


def test_heic_without_pillow_heif_names_the_missing_package(monkeypatch):
    raw = encode(Image.new("RGB", (8, 8)), "HEIF")
    monkeypatch.setattr(decode, "register_heif_opener", lambda: False)
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    monkeypatch.setattr(Image, "ID", [k for k in Image.ID if k != "HEIF"])
    with pytest.raises(decode.ImageDecodeError, match="pillow-heif is not installed"):
        decode_image(raw, "x.heic")
