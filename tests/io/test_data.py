"""Tests for aigi.io: the split rule, dataset layouts, safe reading and decoding.

Every input is generated here (Pillow/numpy/zipfile) in ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import struct
import time
import zipfile
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFile

from aigi.io.datasets import ImageDataset, load_dataset
from aigi.io.decode import decode_image, read_image, reduction_factor
from aigi.io.files import iter_inputs, read_bytes
from aigi.io.samples import ImageDecodeError, Sample, check_split, label_from_relpath, split_of

# ----------------------------------------------------------------------------- helpers


def expected_split(relpath: str) -> str:
    """The published rule, computed independently of aigi."""
    h = int(hashlib.sha1(relpath.encode()).hexdigest(), 16) % 10
    return {0: "test", 1: "val"}.get(h, "train")


def close(pixel, want, tol: int = 12) -> bool:
    return len(pixel) == len(want) and all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, want))


def assert_rgb8(im: Image.Image) -> None:
    assert isinstance(im, Image.Image)
    assert im.mode == "RGB"
    assert np.asarray(im).dtype == np.uint8


def two_colour(size=(16, 8), left=(255, 0, 0), right=(0, 0, 255), mode="RGB") -> Image.Image:
    """Left half one colour, right half another."""
    w, h = size
    im = Image.new(mode, size, right)
    im.paste(left, (0, 0, w // 2, h))
    return im


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16bit_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR width/height of a PNG (and its CRC); the pixel data stays tiny."""
    assert png[12:16] == b"IHDR"
    out = bytearray(png)
    out[16:24] = struct.pack(">II", width, height)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def write_zip(path, members: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return os.fspath(path)


def zip_tree(root, archive) -> str:
    """Zip every file under ``root`` with its relative path (a folder dataset as a .zip)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for dirpath, _, files in os.walk(root):
            for f in files:
                full = os.path.join(dirpath, f)
                zf.write(full, os.path.relpath(full, root).replace(os.sep, "/"))
    return os.fspath(archive)


def fill_tree(root, relpaths, data: bytes) -> None:
    for rel in relpaths:
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)


# ----------------------------------------------------------------------------- split rule


def test_split_of_matches_independent_rule():
    paths = [f"real/{i:05d}.jpg" for i in range(500)]
    paths += [f"fake/gen{i % 7}/sub{i % 3}/img_{i}.png" for i in range(500)]
    paths += ["", "a", "réal/éàü.jpg", "fake/模型/图像.png", "a b/c d.webp", "x/" * 50 + "y.gif"]
    for p in paths:
        assert split_of(p) == expected_split(p), p


def test_split_known_values():
    # Hard-coded so that a change to the rule cannot go unnoticed, and re-derived with hashlib.
    known = {
        "real/0000.jpg": "train",
        "real/0006.jpg": "val",
        "real/0017.jpg": "test",
        "fake/sd15/0003.png": "test",
    }
    for p, want in known.items():
        h = int(hashlib.sha1(p.encode()).hexdigest(), 16) % 10
        assert expected_split(p) == want, (p, h)
        assert split_of(p) == want


def test_split_proportions():
    names = [f"fake/gen{i % 5}/{i:06d}.png" for i in range(10_000)]
    counts = Counter(split_of(n) for n in names)
    assert sum(counts.values()) == 10_000
    # binomial sd for p=0.1 is 30 images; allow about 3.3 sd
    assert 900 <= counts["test"] <= 1100, counts
    assert 900 <= counts["val"] <= 1100, counts
    assert 7700 <= counts["train"] <= 8300, counts


def test_check_split():
    for s in ("train", "val", "test", "all"):
        assert check_split(s) == s
    with pytest.raises(ValueError, match="unknown split"):
        check_split("validation")


def _split_dataset_tree(tmp_path, encode):
    root = tmp_path / "many"
    png = encode(Image.new("RGB", (2, 2), (1, 2, 3)), "PNG")
    rels = [f"real/r{i:03d}.png" for i in range(60)] + [f"fake/g{i % 3}/f{i:03d}.png" for i in range(60)]
    fill_tree(root, rels, png)
    return root, rels


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_load_dataset_splits_partition(tmp_path, encode, as_zip):
    root, rels = _split_dataset_tree(tmp_path, encode)
    source = zip_tree(root, tmp_path / "many.zip") if as_zip else root
    everything = load_dataset(source)
    assert sorted(s.relpath for s in everything.samples) == sorted(rels)
    parts = {split: load_dataset(source, split=split) for split in ("train", "val", "test")}
    seen: list[str] = []
    for split, ds in parts.items():
        assert ds.split == split
        for s in ds.samples:
            assert expected_split(s.relpath) == split
        seen += [s.relpath for s in ds.samples]
    assert len(seen) == len(set(seen)), "splits overlap"
    assert sorted(seen) == sorted(rels), "train+val+test != all"
    assert len(parts["train"]) > len(parts["val"]) and len(parts["train"]) > len(parts["test"])


def test_folder_and_zip_give_the_same_splits(tmp_path, encode):
    root, _ = _split_dataset_tree(tmp_path, encode)
    archive = zip_tree(root, tmp_path / "many.zip")
    for split in ("train", "val", "test"):
        a = sorted((s.relpath, s.label, s.generator) for s in load_dataset(root, split).samples)
        b = sorted((s.relpath, s.label, s.generator) for s in load_dataset(archive, split).samples)
        assert a == b


def test_load_dataset_rejects_unknown_split(layout_dir):
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset(layout_dir, split="dev")


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "relpath, want",
    [
        ("real/a.jpg", (0, "real")),
        ("real/x/y/z.png", (0, "real")),
        ("REAL/a.jpg", (0, "real")),
        ("fake/sd15/a.png", (1, "sd15")),
        ("fake/sd15/deep/er/a.png", (1, "sd15")),
        ("fake/a.png", (1, "fake")),
        ("real", None),
        ("other/a.png", None),
        ("a.png", None),
        ("../../evil.jpg", None),
    ],
)
def test_label_from_relpath(relpath, want):
    assert label_from_relpath(relpath) == want


def _check_tiny(ds: ImageDataset, layout: dict) -> None:
    by_rel = {s.relpath: s for s in ds.samples}
    assert sorted(by_rel) == sorted(layout)
    for rel, s in by_rel.items():
        label, gen = label_from_relpath(rel)
        assert (s.label, s.generator) == (label, gen)
    assert by_rel["real/sub/deep/b.jpg"].label == 0
    assert by_rel["fake/sd15/nested/more/z.jpg"].generator == "sd15"
    assert by_rel["fake/midjourney/v6/y.webp"].generator == "midjourney"
    assert ds.generators == ["midjourney", "sd15"]
    assert "README.txt" in ds.skipped and "real/notes.txt" in ds.skipped
    assert "other/stray.png" in ds.skipped
    summary = ds.summary()
    assert (summary["n_images"], summary["n_real"], summary["n_fake"]) == (5, 2, 3)
    assert summary["per_source"] == {"midjourney": 1, "real": 2, "sd15": 2}
    for s in ds.samples:  # every sample decodes to its colour
        im = read_image(s)
        assert_rgb8(im)
        assert close(im.getpixel((2, 2)), layout[s.relpath], tol=20), s.relpath


def test_folder_dataset(layout_dir, layout_images):
    ds = load_dataset(layout_dir)
    assert ds.split == "all" and ds.source == os.fspath(layout_dir)
    assert all(s.archive is None and os.path.isfile(s.path) for s in ds.samples)
    _check_tiny(ds, layout_images)


def test_zip_dataset(tmp_path, layout_dir, layout_images):
    archive = zip_tree(layout_dir, tmp_path / "tiny.zip")
    # directory entries and macOS junk must be ignored
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("real/emptydir/", b"")
        zf.writestr("__MACOSX/real/._a.png", b"\x00\x05\x16\x07junk")
    ds = load_dataset(archive)
    assert all(s.archive == archive for s in ds.samples)
    assert all(s.display == f"{archive}::{s.path}" for s in ds.samples)
    _check_tiny(ds, layout_images)


def test_dataset_hidden_folders_are_skipped(layout_dir):
    hidden = layout_dir / "real" / ".cache"
    hidden.mkdir()
    (hidden / "thumb.png").write_bytes((layout_dir / "real" / "a.png").read_bytes())
    (layout_dir / "real" / ".DS_Store.png").write_bytes(b"junk")
    rels = {s.relpath for s in load_dataset(layout_dir).samples}
    assert not any("/." in r for r in rels)


def test_csv_manifest(tmp_path, layout_dir, monkeypatch):
    manifest = layout_dir / "manifest.csv"
    manifest.write_text(
        "path,label,generator\n"
        "real/a.png,0,\n"
        "real/sub/deep/b.jpg,real,\n"
        "fake/sd15/x.png,1,sd15\n"
        "fake/sd15/nested/more/z.jpg,fake,sd-1.5\n"
        "fake/midjourney/v6/y.webp,FAKE,midjourney\n"
    )
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the CSV, not the cwd
    ds = load_dataset(manifest)
    assert [s.relpath for s in ds.samples][:2] == ["real/a.png", "real/sub/deep/b.jpg"]
    assert [s.label for s in ds.samples] == [0, 0, 1, 1, 1]
    assert [s.generator for s in ds.samples] == ["real", "real", "sd15", "sd-1.5", "midjourney"]
    assert ds.generators == ["midjourney", "sd-1.5", "sd15"]
    for s in ds.samples:
        assert os.path.isfile(s.path)
        assert_rgb8(read_image(s))
    for split in ("train", "val", "test"):
        assert all(expected_split(s.relpath) == split for s in load_dataset(manifest, split).samples)


def test_csv_manifest_without_generator_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("label,path\nreal,a.png\n1,b.png\n")
    ds = load_dataset(manifest)
    assert [(s.relpath, s.label, s.generator) for s in ds.samples] == [("a.png", 0, "real"), ("b.png", 1, "fake")]
    assert ds.samples[0].path == os.path.join(os.fspath(tmp_path), "a.png")


def test_csv_manifest_with_utf8_bom(tmp_path):
    # Excel writes "UTF-8 CSV" with a byte-order mark before the first header name.
    manifest = tmp_path / "excel.csv"
    manifest.write_bytes("path,label\nreal/a.png,0\n".encode("utf-8-sig"))
    assert [s.relpath for s in load_dataset(manifest).samples] == ["real/a.png"]


@pytest.mark.parametrize("header", ["file,label\n", "path;label\n", "path\n", "", "a.png,0\n"])
def test_csv_manifest_bad_header(tmp_path, header):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(header + "a.png,0\n")
    with pytest.raises(ValueError, match="path,label"):
        load_dataset(manifest)


@pytest.mark.parametrize("row", ["a.png,maybe", "a.png,2", "a.png,", "a.png"])
def test_csv_manifest_bad_label(tmp_path, row):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(f"path,label\nreal/ok.png,0\n{row}\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: label"):
        load_dataset(manifest)


def test_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope.zip")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope.csv")


def test_unusable_dataset_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_dataset(tmp_path / "empty")
    only_junk = tmp_path / "junk"
    fill_tree(only_junk, ["README.txt", "real/notes.txt", "images/a.png"], b"x")
    with pytest.raises(ValueError, match="no images"):
        load_dataset(only_junk)
    plain = tmp_path / "data.txt"
    plain.write_text("hello")
    with pytest.raises(ValueError, match="folder, a .zip or a .csv"):
        load_dataset(plain)


def test_non_utf8_file_name(tmp_path, encode):
    root = tmp_path / "ds"
    (root / "real").mkdir(parents=True)
    try:
        with open(os.path.join(os.fsencode(root), b"real", b"caf\xe9.png"), "wb") as f:
            f.write(encode(Image.new("RGB", (4, 4), (9, 9, 9)), "PNG"))
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    ds = load_dataset(root)
    (s,) = ds.samples
    assert s.label == 0
    assert split_of(s.relpath) in ("train", "val", "test")  # no UnicodeEncodeError
    assert read_image(s).getpixel((1, 1)) == (9, 9, 9)


# ----------------------------------------------------------------------------- decoding: good files


@pytest.mark.parametrize(
    "fmt, ext, kwargs, tol",
    [
        ("PNG", ".png", {}, 0),
        ("JPEG", ".jpg", {"quality": 95}, 30),
        ("WEBP", ".webp", {"lossless": True}, 0),
        ("WEBP", ".webp", {"quality": 90}, 40),
        ("GIF", ".gif", {}, 0),
        ("BMP", ".bmp", {}, 0),
        ("TIFF", ".tif", {}, 0),
        ("TIFF", ".tiff", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_decode_common_formats(tmp_path, encode, fmt, ext, kwargs, tol):
    im = two_colour((32, 16))
    f = tmp_path / f"img{ext}"
    f.write_bytes(encode(im, fmt, **kwargs))
    for out in (read_image(Sample(os.fspath(f))), decode_image(f.read_bytes(), f.name)):
        assert_rgb8(out)
        assert out.size == (32, 16)
        assert close(out.getpixel((3, 8)), (255, 0, 0), tol)
        assert close(out.getpixel((28, 8)), (0, 0, 255), tol)


def test_decode_16bit_greyscale_png_is_scaled_not_clipped(encode):
    arr = np.full((6, 10), int(65535 * 0.5), np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 0
    data = encode(Image.fromarray(arr), "PNG")
    assert data[24] == 16, "the test image should be a 16-bit PNG"
    out = decode_image(data, "grey16.png")
    assert_rgb8(out)
    assert close(out.getpixel((5, 3)), (128, 128, 128), 1)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 0)


def test_decode_16bit_rgb_png():
    arr = np.zeros((4, 6, 3), np.uint16)
    arr[..., 0] = 65535
    arr[..., 1] = 32768
    arr[:, 3:, 2] = 65535
    out = decode_image(png_16bit_rgb(arr), "rgb16.png")
    assert_rgb8(out)
    assert close(out.getpixel((0, 0)), (255, 128, 0), 1)
    assert close(out.getpixel((5, 3)), (255, 128, 255), 1)


def test_decode_cmyk_jpeg(encode):
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, "cmyk.jpg")
    assert_rgb8(out)
    assert close(out.getpixel((8, 8)), (255, 0, 0), 15)


def test_decode_palette_png_with_transparency(encode):
    im = Image.new("P", (8, 8), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))  # left half: palette index 1, declared transparent
    data = encode(im, "PNG", transparency=1)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = decode_image(data, "pal.png")
    assert_rgb8(out)
    assert out.getpixel((1, 4)) == (255, 255, 255)  # transparent -> white
    assert out.getpixel((6, 4)) == (255, 0, 0)  # opaque keeps its colour


def test_decode_rgba_png(encode):
    im = Image.new("RGBA", (8, 2), (0, 0, 255, 255))
    im.paste((0, 255, 0, 0), (0, 0, 4, 1))  # fully transparent green
    im.paste((0, 0, 0, 128), (0, 1, 4, 2))  # half-transparent black
    out = decode_image(encode(im, "PNG"), "rgba.png")
    assert_rgb8(out)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    assert out.getpixel((6, 0)) == (0, 0, 255)
    assert close(out.getpixel((1, 1)), (127, 127, 127), 2)


def test_decode_la_png(encode):
    im = Image.new("LA", (8, 2), (50, 255))
    im.paste((50, 0), (0, 0, 4, 2))
    out = decode_image(encode(im, "PNG"), "la.png")
    assert_rgb8(out)
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((6, 1)) == (50, 50, 50)


@pytest.mark.parametrize("fmt, kwargs", [("GIF", {}), ("WEBP", {"lossless": True})])
def test_decode_animation_returns_first_frame(encode, fmt, kwargs):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = decode_image(data, f"anim.{fmt.lower()}")
    assert_rgb8(out)
    assert close(out.getpixel((8, 8)), (255, 0, 0), 2)


@pytest.mark.parametrize(
    "orientation, red_corner",
    [
        (1, "top-left"),
        (3, "bottom-right"),  # rotated 180
        (6, "top-right"),  # rotate 90 clockwise to display
        (8, "bottom-left"),  # rotate 90 counter-clockwise to display
    ],
)
def test_decode_exif_orientation(encode, orientation, red_corner):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 10))  # red square in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(im, "JPEG", quality=95, exif=exif), "rot.jpg")
    assert_rgb8(out)
    w, h = out.size
    assert (w, h) == ((20, 40) if orientation in (6, 8) else (40, 20))
    corners = {"top-left": (2, 2), "top-right": (w - 3, 2), "bottom-left": (2, h - 3), "bottom-right": (w - 3, h - 3)}
    for name, xy in corners.items():
        want = (255, 0, 0) if name == red_corner else (0, 0, 255)
        assert close(out.getpixel(xy), want, 30), (name, out.getpixel(xy))


@pytest.mark.parametrize(
    "size, min_size, want",
    [((1000, 800), None, 1), ((1000, 800), 128, 4), ((1000, 800), 100, 8), ((1000, 800), 5000, 1),
     ((300, 200), 128, 1), ((512, 256), 128, 2), ((20000, 10), 64, 1)],
)
def test_reduction_factor(size, min_size, want):
    assert reduction_factor(*size, min_size) == want


def smooth_photo(size=(512, 384), seed=0) -> Image.Image:
    """Photo-like: smooth colour fields with some texture (what draft decoding is for)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8))
    arr = np.asarray(small.resize(size, Image.Resampling.BICUBIC), np.float32) + rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_with_min_size_shrinks_every_format_alike(encode, fmt):
    im = smooth_photo()
    data = encode(im, fmt, quality=95) if fmt != "PNG" else encode(im, fmt)
    full = decode_image(data, "x")
    small = decode_image(data, "x", min_size=96)
    assert_rgb8(small)
    assert small.size == (128, 96)  # factor 4 for JPEG (DCT scaling) and the others (box reduce)
    # Same picture as a box-filtered full decode, within JPEG's own error.
    box = np.asarray(full.reduce(4), np.float32)
    assert np.abs(np.asarray(small, np.float32) - box).mean() < 3.0


def test_decode_with_min_size_never_goes_below_it(encode):
    data = encode(smooth_photo((300, 90)), "JPEG")
    for min_size in (10, 40, 45, 46, 89, 90, 91, 400):
        w, h = decode_image(data, "x", min_size=min_size).size
        assert min(w, h) >= min(min_size, 90)


def test_decode_with_min_size_keeps_exif_orientation(encode):
    im = Image.new("RGB", (400, 200), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 100, 100))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 clockwise: red ends top-right
    for fmt in ("JPEG", "PNG"):
        out = decode_image(encode(im, fmt, exif=exif), "rot", min_size=40)
        assert out.size == (50, 100)
        assert close(out.getpixel((45, 5)), (255, 0, 0), 30) and close(out.getpixel((5, 95)), (0, 0, 255), 30)


def test_decode_with_min_size_still_refuses_bombs_on_the_header(encode, monkeypatch):
    data = patch_png_size(encode(Image.new("RGB", (8, 8)), "PNG"), 60000, 60000)
    with pytest.raises(ImageDecodeError, match="bomb"):
        decode_image(data, "bomb.png", min_size=64)


def test_decode_corrupt_exif_still_decodes(encode):
    data = encode(Image.new("RGB", (12, 6), (0, 200, 0)), "JPEG")
    payload = b"Exif\x00\x00" + b"\xff" * 40
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    out = decode_image(data, "badexif.jpg")
    assert out.size == (12, 6)


def test_decode_mode_1(encode):
    im = two_colour((16, 8), left=0, right=1, mode="1")
    for fmt in ("PNG", "TIFF", "BMP"):
        out = decode_image(encode(im, fmt), f"bw.{fmt.lower()}")
        assert_rgb8(out)
        assert out.getpixel((2, 4)) == (0, 0, 0)
        assert out.getpixel((13, 4)) == (255, 255, 255)


def test_decode_mode_I(encode):
    arr = np.zeros((4, 8), np.int32)
    arr[:, 4:] = 65535
    arr[:, 2:4] = 40000
    im = Image.fromarray(arr)
    assert im.mode == "I"
    data = encode(im, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    out = decode_image(data, "int.tif")
    assert_rgb8(out)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert close(out.getpixel((3, 0)), (156, 156, 156), 1)  # 40000/257: scaled, not clipped
    assert out.getpixel((6, 0)) == (255, 255, 255)


def test_decode_grey_and_other_modes(encode):
    for mode, value in [("L", 77), ("P", 0), ("YCbCr", (77, 128, 128)), ("I;16", 77 * 257)]:
        im = Image.new(mode, (4, 4), value)
        out = decode_image(encode(im, "TIFF" if mode in ("YCbCr", "I;16") else "PNG"), f"{mode}.img")
        assert_rgb8(out)


# ----------------------------------------------------------------------------- decoding: bad files


def _jpeg(encode) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("empty.jpg", lambda j: b"", r"empty"),
        ("truncated.jpg", lambda j: j[: len(j) // 2], r"truncated"),
        ("header-only.jpg", lambda j: j[:200], r"corrupt|truncated"),
        ("text.jpg", lambda j: b"this is not a jpeg\n" * 10, r"not an image"),
        ("page.png", lambda j: b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", r"not an image"),
        ("fake-header.png", lambda j: b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, r"not an image|corrupt|cannot decode"),
    ],
)
def test_decode_bad_bytes(tmp_path, encode, name, make, reason):
    data = make(_jpeg(encode))
    with pytest.raises(ImageDecodeError) as e:
        decode_image(data, name)
    assert e.value.path == name and re.search(reason, e.value.reason)
    assert str(e.value).startswith(f"{name}: ")
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(ImageDecodeError) as e:
        read_image(Sample(os.fspath(f)))
    assert name in str(e.value) and re.search(reason, str(e.value))


def test_decode_bomb_declared_in_header_is_refused_before_decoding(encode, monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real_load(self))
    small = encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    for w, h in [(100_000, 100_000), (10_000, 10_000), (60_000, 2_000)]:
        bomb = patch_png_size(small, w, h)
        t = time.perf_counter()
        with pytest.raises(ImageDecodeError) as e:
            decode_image(bomb, "bomb.png")
        assert time.perf_counter() - t < 1.0
        assert e.value.path == "bomb.png"
        assert re.search(r"decompression[- ]bomb", str(e.value)), str(e.value)
    assert loads == [], "pixels were decoded before the size check"
    assert decode_image(small, "small.png").getpixel((0, 0)) == (1, 2, 3)
    assert loads, "the spy should see a real decode"


def test_decode_max_pixels_is_checked_on_the_header(encode, monkeypatch):
    small = encode(Image.new("RGB", (8, 8)), "PNG")
    big = patch_png_size(small, 5000, 4000)  # 20 MP declared, under Pillow's own limit
    assert Image.open(io.BytesIO(big)).size == (5000, 4000)
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(ImageDecodeError, match="decompression-bomb limit") as e:
        decode_image(big, "big.png", max_pixels=1_000_000)
    assert "5000x4000" in str(e.value) and "before decoding" in str(e.value)
    assert loads == []
    monkeypatch.undo()
    with pytest.raises(ImageDecodeError, match="decompression-bomb limit"):
        decode_image(small, "small.png", max_pixels=63)
    assert decode_image(small, "small.png", max_pixels=64).size == (8, 8)


def test_image_decode_error_is_picklable():
    e = ImageDecodeError("dir/a.jpg", "empty file (0 bytes)")
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, ImageDecodeError)
    assert (back.path, back.reason, str(back)) == (e.path, e.reason, str(e))


# ----------------------------------------------------------------------------- read_bytes


def test_read_bytes_regular_file(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert read_bytes(Sample(os.fspath(f))) == b"abc"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_read_bytes_fifo_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ImageDecodeError, match="not a regular file") as e:
        read_bytes(Sample(os.fspath(fifo)))
    assert e.value.path == os.fspath(fifo)
    # also when found while walking a folder
    (s,) = list(iter_inputs([tmp_path]))
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image(s)


def test_read_bytes_directory(tmp_path):
    d = tmp_path / "folder.png"
    d.mkdir()
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_bytes(Sample(os.fspath(d)))


def test_read_bytes_missing_and_broken_symlink(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found"):
        read_bytes(Sample(os.fspath(tmp_path / "missing.jpg")))
    link = tmp_path / "broken.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match="not found") as e:
        read_image(Sample(os.fspath(link)))
    assert "broken.jpg" in str(e.value)


def test_read_bytes_symlink_loop(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ImageDecodeError, match="cannot read") as e:
        read_image(Sample(os.fspath(a)))
    assert "a.jpg" in str(e.value)
    # a folder holding the loop is walked without hanging, and each link reports an error
    samples = list(iter_inputs([tmp_path]))
    assert [s.relpath for s in samples] == ["a.jpg", "b.jpg"]
    for s in samples:
        with pytest.raises(ImageDecodeError):
            read_image(s)


def test_read_bytes_symlinked_folder_loop_is_not_followed(tmp_path, encode):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(encode(Image.new("RGB", (2, 2)), "PNG"))
    (tmp_path / "real" / "again").symlink_to(tmp_path, target_is_directory=True)
    assert [s.relpath for s in load_dataset(tmp_path).samples] == ["real/a.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_read_bytes_permission_denied(tmp_path):
    f = tmp_path / "secret.jpg"
    f.write_bytes(b"\xff\xd8\xff")
    f.chmod(0)
    try:
        with pytest.raises(ImageDecodeError, match="permission denied"):
            read_bytes(Sample(os.fspath(f)))
    finally:
        f.chmod(0o644)


def test_read_bytes_size_limit(tmp_path):
    f = tmp_path / "big.jpg"
    f.write_bytes(b"x" * 5000)
    with pytest.raises(ImageDecodeError, match="limit"):
        read_bytes(Sample(os.fspath(f)), max_bytes=4096)
    assert len(read_bytes(Sample(os.fspath(f)), max_bytes=5000)) == 5000
    archive = write_zip(tmp_path / "big.zip", {"big.jpg": b"x" * 5000})
    with pytest.raises(ImageDecodeError, match="limit"):
        read_bytes(Sample("big.jpg", archive=archive), max_bytes=4096)


def test_read_bytes_zip_problems(tmp_path, encode):
    archive = write_zip(tmp_path / "a.zip", {"real/a.png": encode(Image.new("RGB", (2, 2)), "PNG")})
    with pytest.raises(ImageDecodeError, match="no such member") as e:
        read_bytes(Sample("real/missing.png", archive=archive))
    assert str(e.value).startswith(f"{archive}::real/missing.png")
    with pytest.raises(ImageDecodeError):
        read_bytes(Sample("x.png", archive=os.fspath(tmp_path / "gone.zip")))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ImageDecodeError):
        read_bytes(Sample("x.png", archive=os.fspath(junk)))


# ----------------------------------------------------------------------------- iter_inputs


def test_iter_inputs_mix_of_file_folder_and_zip(tmp_path, layout_dir, encode):
    loose = tmp_path / "loose" / "photo.JPG"
    loose.parent.mkdir()
    loose.write_bytes(encode(Image.new("RGB", (4, 4), (5, 5, 5)), "JPEG"))
    notes = tmp_path / "loose" / "notes.txt"
    notes.write_text("explicitly named, so yielded")
    archive = write_zip(
        tmp_path / "more.zip",
        {
            "fake/dalle3/q.png": encode(Image.new("RGB", (4, 4), (0, 0, 0)), "PNG"),
            "docs/readme.md": b"# no",
            "loose/p.webp": encode(Image.new("RGB", (4, 4)), "WEBP"),
            "real/": b"",
        },
    )
    inputs = [loose, layout_dir, archive, notes, tmp_path / "does-not-exist.png"]
    samples = list(iter_inputs(inputs))
    assert samples == list(iter_inputs(inputs)), "order must be deterministic"
    got = [(s.relpath, s.label, s.generator, s.archive) for s in samples]
    assert got == [
        ("photo.JPG", -1, "", None),
        ("fake/midjourney/v6/y.webp", 1, "midjourney", None),
        ("fake/sd15/x.png", 1, "sd15", None),
        ("fake/sd15/nested/more/z.jpg", 1, "sd15", None),
        ("other/stray.png", -1, "", None),
        ("real/a.png", 0, "real", None),
        ("real/sub/deep/b.jpg", 0, "real", None),
        ("fake/dalle3/q.png", 1, "dalle3", archive),
        ("loose/p.webp", -1, "", archive),
        ("notes.txt", -1, "", None),
        ("does-not-exist.png", -1, "", None),
    ]
    assert samples[0].path == os.fspath(loose)
    assert samples[7].display == f"{archive}::fake/dalle3/q.png"
    for s in samples[:9]:
        assert_rgb8(read_image(s))
    for s in samples[9:]:
        with pytest.raises(ImageDecodeError):
            read_image(s)


def test_iter_inputs_zip_path_traversal_is_read_not_extracted(tmp_path, encode, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    members = {
        "../../evil.jpg": encode(Image.new("RGB", (6, 6), (0, 255, 0)), "JPEG", quality=95),
        "/abs/evil2.png": encode(Image.new("RGB", (6, 6), (255, 0, 255)), "PNG"),
        "real/ok.png": encode(Image.new("RGB", (6, 6), (1, 1, 1)), "PNG"),
    }
    archive = write_zip(work / "evil.zip", members)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    samples = list(iter_inputs([archive]))
    assert [s.path for s in samples] == list(members)
    assert [s.label for s in samples] == [-1, -1, 0]
    assert close(read_image(samples[0]).getpixel((3, 3)), (0, 255, 0), 20)
    assert read_image(samples[1]).getpixel((3, 3)) == (255, 0, 255)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "something was extracted"
    assert not os.path.exists("/abs/evil2.png")
    ds = load_dataset(archive)  # as a dataset, members outside real/ and fake/ are skipped
    assert [s.path for s in ds.samples] == ["real/ok.png"]
    assert "../../evil.jpg" in ds.skipped


def test_iter_inputs_folder_skips_non_images_and_is_lazy(tmp_path, encode):
    png = encode(Image.new("RGB", (2, 2)), "PNG")
    fill_tree(tmp_path, ["b.png", "a.png", "sub/c.PNG", "sub/readme.txt", ".hidden/d.png", "__MACOSX/._a.png"], png)
    it = iter_inputs([tmp_path])
    assert iter(it) is it  # a generator, not a list
    assert [s.relpath for s in it] == ["a.png", "b.png", "sub/c.PNG"]


# ----------------------------------------------------------------------------- subset


def test_subset_is_deterministic(tmp_path, encode):
    root, rels = _split_dataset_tree(tmp_path, encode)
    ds = load_dataset(root)
    a, b = ds.subset(10, seed=3), ds.subset(10, seed=3)
    assert len(a) == 10
    assert [s.relpath for s in a.samples] == [s.relpath for s in b.samples]
    order = [s.relpath for s in ds.samples]
    picked = [s.relpath for s in a.samples]
    assert len(set(picked)) == 10 and set(picked) <= set(order)
    assert picked == sorted(picked, key=order.index), "a subset keeps the dataset order"
    assert [s.relpath for s in ds.subset(10, seed=4).samples] != picked
    assert a.split == ds.split and a.source == ds.source
    assert len(ds.subset(None)) == len(ds) == len(ds.subset(len(ds))) == len(ds.subset(10**6))
    val = load_dataset(root, "val")
    assert val.subset(1, seed=0).split == "val" and len(val.subset(1, seed=0)) == 1


def test_zip_rewritten_on_disk_is_read_afresh(tmp_path):
    archive = write_zip(tmp_path / "d.zip", {"real/a.png": b"first"})
    assert read_bytes(Sample("real/a.png", archive=archive)) == b"first"
    write_zip(archive, {"real/a.png": b"second, longer", "real/b.png": b"new"})  # same inode
    assert read_bytes(Sample("real/a.png", archive=archive)) == b"second, longer"
    assert read_bytes(Sample("real/b.png", archive=archive)) == b"new"
    os.replace(write_zip(tmp_path / "tmp.zip", {"real/a.png": b"third"}), archive)  # new inode
    assert read_bytes(Sample("real/a.png", archive=archive)) == b"third"
    os.remove(archive)
    with pytest.raises(ImageDecodeError, match="not found"):
        read_bytes(Sample("real/a.png", archive=archive))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_zip_handles_do_not_accumulate(tmp_path):
    def n_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = n_fds()
    for i in range(40):
        archive = write_zip(tmp_path / f"{i}.zip", {"a.png": b"x%d" % i})
        assert read_bytes(Sample("a.png", archive=archive)) == b"x%d" % i
        os.remove(archive)  # e.g. a temporary upload: its disk space must be freed
    assert n_fds() - before <= 10


def test_load_datasets_concatenates_and_keeps_each_split(layout_dir, tmp_path):
    import shutil

    from aigi.io.datasets import load_datasets

    other = tmp_path / "other_ds"
    shutil.copytree(layout_dir, other)
    one = load_dataset(layout_dir, "all")
    both = load_datasets([layout_dir, other], "all")
    assert len(both) == 2 * len(one)
    assert [s.relpath for s in both.samples] == [s.relpath for s in one.samples] * 2
    assert load_datasets(str(layout_dir)).samples == one.samples


def test_a_manifest_split_column_fixes_each_rows_split(tmp_path):
    """The cross-source yardstick holds out whole sources: a manifest's split column says where each row
    goes, whatever the hash rule would say; rows without one keep the rule; a bad value names its line."""
    from aigi.io.samples import split_of

    names = [f"real/x{i}.jpg" for i in range(40)]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    lines = ["path,label,split"] + [f"{n},real,{'test' if i < 20 else ''}" for i, n in enumerate(names)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    test = {s.relpath for s in load_dataset(tmp_path / "m.csv", "test").samples}
    assert test == set(names[:20]) | {n for n in names[20:] if split_of(n) == "test"}
    assert {s.relpath for s in load_dataset(tmp_path / "m.csv", "train").samples} == {
        n for n in names[20:] if split_of(n) == "train"}
    (tmp_path / "bad.csv").write_text("path,label,split\nreal/x0.jpg,real,holdout\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: split 'holdout' is not one of train, val, test"):
        load_dataset(tmp_path / "bad.csv")
