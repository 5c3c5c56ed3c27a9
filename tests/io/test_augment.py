"""Training augmentations: crop-sized, seeded, and the same for every class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aigi.io.augment import CROP_RECIPES, LEVELS, augment_image, jpeg_reencode, random_crop


def _photo(w: int, h: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(40, 30), (64, 64), (500, 120), (2000, 1500)])
def test_random_crop_is_always_crop_sized(size):
    im = _photo(*size)
    for seed in range(40):  # enough draws to hit every branch of "robust"
        out = random_crop(im, 48, np.random.default_rng(seed), "robust")
        assert out.size == (48, 48) and out.mode == "RGB"


def test_random_crop_is_reproducible_and_levels_differ():
    im = _photo(300, 200)
    runs = {level: np.asarray(random_crop(im, 64, np.random.default_rng([3, 1, 4]), level)) for level in LEVELS}
    again = np.asarray(random_crop(im, 64, np.random.default_rng([3, 1, 4]), "robust"))
    assert np.array_equal(runs["robust"], again)
    # "none" is a plain crop of the original pixels.
    none = runs["none"]
    arr = np.asarray(im)
    assert any(np.array_equal(none, arr[y:y + 64, x:x + 64]) for y in range(137) for x in range(237))


def test_robust_recipe_is_the_documented_one():
    r = CROP_RECIPES["robust"]
    assert r["quality"] == (30, 100) and r["rescale"] > 0 and r["reshare"] > 0 and r["noise"] > 0 and r["blur"] > 0


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation level"):
        random_crop(_photo(64, 64), 32, np.random.default_rng(0), "heavy")
    with pytest.raises(ValueError, match="unknown augmentation level"):
        augment_image(_photo(64, 64), np.random.default_rng(0), "heavy")


def test_jpeg_reencode_changes_pixels_but_not_size():
    im = _photo(64, 48)
    out = jpeg_reencode(im, 50, 2)
    assert out.size == im.size and not np.array_equal(np.asarray(out), np.asarray(im))
