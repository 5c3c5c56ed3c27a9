"""Training augmentations: applied to real and fake images alike, from a per-image seed.

They exist to make the detector ignore what should not matter (JPEG re-encoding, blur,
rescaling, noise, framing) -- the robustness gaps the CLIP-detector paper names. Every
random choice comes from ``rng``, so a (seed, epoch, index) triple always gives the same
image, whichever worker decodes it and whether or not the run was resumed.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

LEVELS = ("none", "light", "robust")


def jpeg_reencode(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def augment_image(im: Image.Image, rng: np.random.Generator, level: str = "light") -> Image.Image:
    """One random augmentation of ``im`` at ``level`` (``none``, ``light``, ``robust``)."""
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
        arr = np.asarray(im, dtype=np.float32)
        arr = arr + np.random.default_rng(noise_seed).normal(0.0, noise_std, arr.shape)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if u[5] < (0.5 if robust else 0.3):
        im = jpeg_reencode(im, quality)
    return im
