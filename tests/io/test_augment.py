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


def test_policy_crops_make_one_change_each_and_are_reproducible():
    from aigi.io.augment import POLICIES, policy_crop, policy_set

    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)).resize((1000, 600))
    for policy in POLICIES:
        a = policy_crop(base, 64, policy, np.random.default_rng(7))
        b = policy_crop(base, 64, policy, np.random.default_rng(7))
        assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b)), policy
    assert policy_crop(Image.new("RGB", (40, 30)), 64, "half", np.random.default_rng(0)).size == (64, 64)
    # "clean" is a native crop: every row of it is a row of the image (or its mirror).
    clean = np.asarray(policy_crop(base, 64, "clean", np.random.default_rng(3)))
    rows = {bytes(r) for r in np.asarray(base).reshape(-1, 3)}
    assert all(bytes(px) in rows for px in clean.reshape(-1, 3)[:50])
    # "half" sees twice the field of view: the same smooth image is twice as dense per pixel.
    half = np.asarray(policy_crop(base, 64, "half", np.random.default_rng(3)), np.float64)
    assert np.abs(np.diff(half, axis=1)).mean() > 1.3 * np.abs(np.diff(clean.astype(np.float64), axis=1)).mean()
    assert policy_set("clean+jpeg+clean") == ("clean", "jpeg") and policy_set("robust") is None
    with pytest.raises(ValueError, match="policies joined by"):
        policy_set("clean+sharpen")


def test_load_input_names_the_policy_of_each_draw():
    from aigi.io.inputs import load_input
    from aigi.io.preprocessing import Preprocessing

    prep = Preprocessing().native_crops(32, crops=1, min_side=8)
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8))
    seen = {load_input(im, prep, augment="jpeg+reshare", rng=np.random.default_rng(i)).policy for i in range(20)}
    assert seen == {"jpeg", "reshare"}
    assert load_input(im, prep, augment="robust", rng=np.random.default_rng(0)).policy == ""
