"""Perturbations of held-out images, applied the same way to real and fake: the robustness grid.

``jpeg95`` / ``jpeg75`` / ``jpeg50``: JPEG at that quality, 4:2:0; ``resize0.5`` / ``resize1.5``:
bicubic rescale; ``blur1``: Gaussian blur, sigma 1; ``reshare``: the chain of a re-shared image
(0.75x bicubic, then JPEG 80 at 4:2:0). Shared by the generalization and yardstick benchmarks.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter

PERTURBATIONS = ("none", "jpeg95", "jpeg75", "jpeg50", "resize0.5", "resize1.5", "blur1", "reshare")


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=2)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def perturb(im: Image.Image, name: str) -> Image.Image:
    """One perturbation of the grid, applied the same way to real and fake images."""
    w, h = im.size
    if name == "none":
        return im
    if name.startswith("jpeg"):
        return _jpeg(im, int(name[4:]))
    if name.startswith("resize"):
        s = float(name[6:])
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)
    if name == "blur1":
        return im.filter(ImageFilter.GaussianBlur(1.0))
    if name == "reshare":
        return _jpeg(im.resize((max(1, round(w * 0.75)), max(1, round(h * 0.75))), Image.Resampling.BICUBIC), 80)
    raise ValueError(f"unknown perturbation {name!r}")


__all__ = ["PERTURBATIONS", "perturb"]
