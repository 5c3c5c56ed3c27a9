"""Training augmentations: applied to real and fake images alike, from a per-image seed.

They exist to make the detector ignore what should not matter (JPEG re-encoding, blur,
rescaling, noise, framing, re-sharing) -- the robustness gaps the CLIP-detector paper names.
Every random choice comes from ``rng``, so a (seed, epoch, index) triple always gives the
same image, whichever worker decodes it and whether or not the run was resumed.

:func:`random_crop` makes one native-resolution training crop at a *level* (``none``,
``light``, ``robust``: every step with its own probability, several at once). :func:`policy_crop`
makes one at a *policy* instead: exactly one kind of change per draw (``clean``, ``jpeg``,
``resize``, ``reshare``, ``blurnoise``, ``half``), chosen among a recipe's set (``augment =
"clean+jpeg+reshare"``). With one change per draw, every draw says which change it saw, so a
probe run can reuse an earlier run's encoded draws with any subset of its policies
(:mod:`aigi.training.probe`), and each augmentation can be ablated without encoding anything
again. :func:`augment_image` is the whole-image version for models that resize.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

from .crops import upscale_small

LEVELS = ("none", "light", "robust")
# One change per draw (see policy_crop); a recipe names a set of them joined by "+".
POLICIES = ("clean", "jpeg", "resize", "reshare", "blurnoise", "half")
RESAMPLERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)

# (probability, range) of each step of random_crop, per level. "robust" is the recipe of the
# generalization work: JPEG 30-100, resize 0.5-1.5x before cropping, blur, noise, re-sharing.
CROP_RECIPES = {
    "none": dict(rescale=0.0, blur=0.0, noise=0.0, jpeg=0.0, reshare=0.0, quality=(95, 100), sigma=1.0),
    "light": dict(rescale=0.0, blur=0.1, noise=0.0, jpeg=0.3, reshare=0.0, quality=(65, 100), sigma=1.0),
    "robust": dict(rescale=0.3, blur=0.15, noise=0.1, jpeg=0.5, reshare=0.1, quality=(30, 100), sigma=1.5),
}


def jpeg_reencode(im: Image.Image, quality: int, subsampling: int = -1) -> Image.Image:
    """``im`` through a JPEG encoder and back (``subsampling``: 0 = 4:4:4, 2 = 4:2:0, -1 = Pillow's default)."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(quality), subsampling=int(subsampling))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def add_noise(im: Image.Image, std: float, seed: int) -> Image.Image:
    arr = np.asarray(im, dtype=np.float32)
    arr = arr + np.random.default_rng(seed).normal(0.0, std, arr.shape)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def random_crop(im: Image.Image, crop: int, rng: np.random.Generator, level: str = "robust",
                base_scale: float = 1.0) -> Image.Image:
    """One ``crop`` x ``crop`` training crop of ``im`` at native resolution, augmented at ``level``.

    Order, as an image is processed before anyone crops it: rescale (0.5-1.5x) -> blur ->
    noise -> JPEG (random quality, 4:4:4 or 4:2:0) -> re-share (downscale 0.5-0.9x, JPEG
    60-90) -> the small-image rule (:func:`aigi.io.crops.upscale_small`) -> a random crop ->
    horizontal flip. ``base_scale`` (0.5: a model's half-size view) multiplies the rescale. Only a window a little larger than the crop needs is processed, so a
    12-megapixel photo costs what a small one does; the JPEG grid lands at a random phase
    within the crop, as in a photo cropped after it was saved.
    """
    if level not in CROP_RECIPES:
        raise ValueError(f"unknown augmentation level {level!r}; choose one of {', '.join(LEVELS)}")
    r = CROP_RECIPES[level]
    # Draw every number up front so the random stream does not depend on which branches run.
    u = rng.random(8)
    scale = rng.uniform(0.5, 1.5)
    sigma = rng.uniform(0.1, r["sigma"])
    noise_std, noise_seed = rng.uniform(1.0, 5.0), int(rng.integers(2**31))
    quality, subsampling = int(rng.integers(r["quality"][0], r["quality"][1] + 1)), int(rng.choice([0, 2]))
    share_scale, share_quality = rng.uniform(0.5, 0.9), int(rng.integers(60, 91))
    resampler = RESAMPLERS[int(rng.integers(len(RESAMPLERS)))]
    window_x, window_y, crop_x, crop_y = rng.random(4)

    scale = (scale if u[0] < r["rescale"] else 1.0) * base_scale
    share = u[4] < r["reshare"]
    total = scale * (share_scale if share else 1.0)
    # The window, in original pixels, that still covers a crop after every rescale (+ margin
    # for the blur and the JPEG grid's phase).
    side = math.ceil((crop + 24) / total)
    w, h = im.size
    ww, wh = min(w, side), min(h, side)
    left, top = round((w - ww) * window_x), round((h - wh) * window_y)
    im = im.crop((left, top, left + ww, top + wh))
    if scale != 1.0:
        im = im.resize((max(1, round(ww * scale)), max(1, round(wh * scale))), resampler)
    if u[1] < r["blur"]:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    if u[2] < r["noise"]:
        im = add_noise(im, noise_std, noise_seed)
    if u[3] < r["jpeg"]:
        im = jpeg_reencode(im, quality, subsampling)
    if share:
        im = im.resize((max(1, round(im.width * share_scale)), max(1, round(im.height * share_scale))),
                       Image.Resampling.BILINEAR)
        im = jpeg_reencode(im, share_quality, 2)
    im, _ = upscale_small(im, crop)
    x, y = round((im.width - crop) * crop_x), round((im.height - crop) * crop_y)
    im = im.crop((x, y, x + crop, y + crop))
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if u[5] < 0.5 and level != "none" else im


def augment_image(im: Image.Image, rng: np.random.Generator, level: str = "light") -> Image.Image:
    """One random augmentation of a whole image at ``level`` (models that resize the image)."""
    if level == "none":
        return im
    if level not in LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; choose one of {', '.join(LEVELS)}")
    robust = level == "robust"
    # Draw every number up front so the random stream does not depend on which branches run.
    u = rng.random(8)
    quality = rng.integers(50 if robust else 65, 101)
    sigma = rng.uniform(0.1, 2.0 if robust else 1.0)
    crop_scale, crop_x, crop_y = rng.uniform(0.5, 1.0), rng.random(), rng.random()
    rescale = rng.uniform(0.5, 1.5)
    noise_std = rng.uniform(1.0, 8.0)
    noise_seed = int(rng.integers(2**31))

    if u[0] < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if robust and u[1] < 0.5:  # random crop: framing must not matter
        w, h = im.size
        cw, ch = max(1, round(w * crop_scale)), max(1, round(h * crop_scale))
        left, top = round((w - cw) * crop_x), round((h - ch) * crop_y)
        im = im.crop((left, top, left + cw, top + ch))
    if robust and u[2] < 0.2:  # down/up-scaling, as re-shared images are
        w, h = im.size
        im = im.resize((max(8, round(w * rescale)), max(8, round(h * rescale))), Image.Resampling.BILINEAR)
    if u[3] < (0.3 if robust else 0.1):
        im = im.filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    if robust and u[4] < 0.1:
        im = add_noise(im, noise_std, noise_seed)
    if u[5] < (0.5 if robust else 0.3):
        im = jpeg_reencode(im, quality)
    return im


def policy_set(augment: str) -> tuple[str, ...] | None:
    """The policies of an ``augment`` value like ``"clean+jpeg"`` (None for a level name);
    ValueError naming what is unknown."""
    if augment in LEVELS:
        return None
    names = tuple(dict.fromkeys(augment.split("+")))
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise ValueError(f"unknown augmentation {augment!r}: a level ({', '.join(LEVELS)}) or policies joined by '+' "
                         f"({', '.join(POLICIES)})")
    return names


def _window(im: Image.Image, side: int, rng: np.random.Generator) -> Image.Image:
    """A random ``side`` x ``side`` window of ``im`` (the small-image rule first)."""
    im, _ = upscale_small(im, side)
    x, y = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
    return im.crop((x, y, x + side, y + side))


def _rescaled(im: Image.Image, crop: int, scale: float, margin: int, rng: np.random.Generator,
              resample: int) -> Image.Image:
    """A window of ``im`` that still covers ``crop`` (+ ``margin``) px after resizing by ``scale``, resized."""
    if min(im.size) * scale >= crop:  # only the window the crop needs is processed
        im = _window(im, min(min(im.size), math.ceil((crop + margin) / scale)), rng)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)


def policy_crop(im: Image.Image, crop: int, policy: str, rng: np.random.Generator) -> Image.Image:
    """One ``crop`` x ``crop`` training crop with exactly one change, ``policy``:

    - ``clean``: a random native crop, nothing else;
    - ``jpeg``: then JPEG at quality 50-99, 4:4:4 or 4:2:0 (the grid at a random phase);
    - ``resize``: the image rescaled 0.5-1.5x (bilinear, bicubic or Lanczos) before the crop;
    - ``reshare``: downscaled 0.5-0.9x (bilinear), then JPEG 60-90 at 4:2:0, as a re-shared image;
    - ``blurnoise``: Gaussian blur (sigma 0.3-1.5) or Gaussian noise (std 1-5), either half the time;
    - ``half``: the image seen at half size (a region twice the crop, bicubic), the view of a
      model with ``scales`` (1.0, 0.5); a clean crop where the image holds no such region.

    Then a horizontal flip half the time. Real and fake images get the same policies.
    """
    if policy == "clean":
        c = _window(im, crop, rng)
    elif policy == "jpeg":
        c = _window(jpeg_reencode(_window(im, crop + 16, rng), int(rng.integers(50, 100)), int(rng.choice([0, 2]))),
                    crop, rng)
    elif policy == "resize":
        scale = rng.uniform(0.5, 1.5)
        c = _window(_rescaled(im, crop, scale, 8, rng, RESAMPLERS[int(rng.integers(len(RESAMPLERS)))]), crop, rng)
    elif policy == "reshare":
        scale = rng.uniform(0.5, 0.9)
        shared = _rescaled(im, crop, scale, 16, rng, Image.Resampling.BILINEAR)
        c = _window(jpeg_reencode(shared, int(rng.integers(60, 91)), 2), crop, rng)
    elif policy == "blurnoise":
        c = _window(im, crop + 8, rng)
        if rng.random() < 0.5:
            c = c.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
        else:
            c = add_noise(c, float(rng.uniform(1.0, 5.0)), int(rng.integers(2**31)))
        c = _window(c, crop, rng)
    elif policy == "half":
        if min(im.size) >= 2 * crop:
            c = _window(im, 2 * crop, rng).resize((crop, crop), Image.Resampling.BICUBIC)
        else:
            c = _window(im, crop, rng)
    else:
        raise ValueError(f"unknown augmentation policy {policy!r} (known: {', '.join(POLICIES)})")
    return c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else c
