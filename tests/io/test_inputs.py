"""The one path from a file to model input: crops, the small-image rule, every source alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aigi.io.crops import crop_boxes, share_crops, upscale_small
from aigi.io.inputs import load_input
from aigi.io.preprocessing import Preprocessing
from aigi.io.samples import ImageDecodeError, Sample

NATIVE = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3).native_crops(32, crops=4, min_side=16)


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("w, h, n, want", [
    (512, 512, 4, 4), (256, 256, 4, 1), (300, 300, 4, 1), (4000, 3000, 4, 4), (4000, 3000, 9, 9),
    (4000, 1000, 4, 4), (1000, 4000, 2, 2), (32, 32, 5, 1), (512, 256, 4, 2)])
def test_crop_boxes_cover_the_image_without_leaving_it(w, h, n, want):
    boxes = crop_boxes(w, h, 256 if w >= 256 and h >= 256 else 32, n)
    crop = boxes[0][2] - boxes[0][0]
    assert len(boxes) == want and len(set(boxes)) == want
    for left, top, right, bottom in boxes:
        assert 0 <= left and 0 <= top and right <= w and bottom <= h
        assert right - left == crop and bottom - top == crop
    assert crop_boxes(w, h, crop, n) == boxes  # deterministic


def test_crop_boxes_tile_an_exact_multiple():
    assert crop_boxes(512, 512, 256, 4) == [(0, 0, 256, 256), (256, 0, 512, 256), (0, 256, 256, 512), (256, 256, 512, 512)]
    # A wide image is sampled along its length, not stacked in one corner.
    xs = sorted(b[0] for b in crop_boxes(4000, 1000, 256, 4))
    assert xs[0] < 1000 < xs[-1] and xs[-1] > 2500


def test_crop_boxes_refuse_bad_arguments():
    with pytest.raises(ValueError, match="at least 1"):
        crop_boxes(100, 100, 32, 0)
    with pytest.raises(ValueError, match="smaller than"):
        crop_boxes(20, 100, 32, 1)


def test_native_crops_are_the_image_pixels_unchanged():
    im = _photo(80, 64)
    x = load_input(im, NATIVE)
    assert x.pixels.shape == (4, 3, 32, 32) and x.image_size == (80, 64)
    for pixels, (l, t, r, b) in zip(x.pixels, x.boxes):
        expected = (np.asarray(im, np.float32)[t:b, l:r] / 255.0 - 0.5) / 0.5
        assert np.allclose(pixels.transpose(1, 2, 0), expected, atol=1e-6)


def test_small_images_are_upscaled_to_the_crop_and_tiny_ones_are_too_small():
    x = load_input(_photo(20, 40), NATIVE)  # shorter side 20 < crop 32: upscaled x1.6
    assert x.pixels.shape[1:] == (3, 32, 32) and not x.too_small
    assert all(0 <= l < r <= 20 and 0 <= t < b <= 40 for l, t, r, b in x.boxes)  # boxes in original pixels
    up, scale = upscale_small(_photo(20, 40), 32)
    assert up.size == (32, 64) and scale == pytest.approx(1.6)
    tiny = load_input(_photo(12, 12), NATIVE)
    assert tiny.too_small and tiny.n_crops == 0 and tiny.boxes == [] and tiny.image_size == (12, 12)


def test_path_bytes_pil_and_upload_give_identical_input(tmp_path):
    """The same image scores the same however it arrives (aigi 0.1 gave a PIL image other pixels)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = _png(_photo(70, 40), exif=exif)
    path = tmp_path / "rotated.png"
    path.write_bytes(data)
    via = [load_input(path, NATIVE), load_input(str(path), NATIVE), load_input(data, NATIVE),
           load_input(("up.png", data), NATIVE), load_input(Image.open(path), NATIVE),
           load_input(Sample(str(path)), NATIVE)]
    for x in via:
        assert x.image_size == (40, 70)  # EXIF orientation applied on every path
        assert np.array_equal(x.pixels, via[0].pixels) and x.boxes == via[0].boxes
    assert via[3].name == "up.png" and via[0].name == str(path)


def test_resize_recipe_is_kept_for_older_models():
    prep = Preprocessing(size=40, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = load_input(_photo(100, 60), prep)
    assert x.pixels.shape == (1, 3, 32, 32) and x.boxes == [(0, 0, 100, 60)]
    assert prep.decode_size == 80 and NATIVE.decode_size is None  # native crops decode every pixel


def test_training_crop_is_seeded_and_crop_sized():
    im = _photo(300, 200)
    src = _png(im)
    for level in ("none", "light", "robust"):
        a = load_input(src, NATIVE, augment=level, rng=np.random.default_rng([1, 2, 3]))
        b = load_input(src, NATIVE, augment=level, rng=np.random.default_rng([1, 2, 3]))
        assert a.pixels.shape == (1, 3, 32, 32) and np.array_equal(a.pixels, b.pixels)
    with pytest.raises(ValueError, match="rng"):
        load_input(src, NATIVE, augment="light")


def test_unreadable_sources_raise_a_decode_error():
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_input(b"definitely not an image", NATIVE)
    with pytest.raises(ImageDecodeError, match="empty"):
        load_input(("empty.jpg", b""), NATIVE)


@pytest.mark.parametrize("total, views, want", [
    (12, [(4000, 3000, 224), (4000, 3000, 448)], [6, 6]),  # evenly, where both scales have room
    (12, [(1000, 800, 224), (1000, 800, 448)], [8, 4]),  # the half scale holds 4: the rest go native
    (5, [(4000, 3000, 224), (4000, 3000, 448)], [3, 2]),  # the remainder to the native pixels
    (1, [(4000, 3000, 224), (4000, 3000, 448)], [1, 0]),
    (12, [(481, 321, 224)], [2]),  # no room for more: fewer, never more
])
def test_crops_n_is_shared_between_the_scales(total, views, want):
    assert share_crops(total, views) == want


def test_crops_n_is_the_total_per_image_with_a_half_scale_view():
    """``crops=N`` scores N crops in all (issue 19: ``--crops 12`` scored 20 with a half-scale
    view); left out, the model's own number at every scale, as before."""
    prep = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3).native_crops(32, crops=2, min_side=16, scales=(1.0, 0.5))
    im = _photo(160, 128)
    for crops, native, half in ((12, 8, 4), (3, 2, 1), (None, 2, 2)):
        x = load_input(im, prep, crops=crops)
        assert (x.scales.count(1.0), x.scales.count(0.5)) == (native, half)
        assert x.n_crops == len(x.boxes) == native + half
    with pytest.raises(ValueError, match="at least 1"):
        load_input(im, prep, crops=0)
