"""Where the crops go: the small-image rule and the even grid of native-resolution crop boxes.

Pure geometry on a ``PIL.Image`` (no normalisation, no torch): used by the one input path
(:mod:`aigi.io.inputs`), by :meth:`~aigi.io.preprocessing.Preprocessing.__call__` and by the
training augmentations (:mod:`aigi.io.augment`), so that all of them place crops alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # (left, top, right, bottom), pixels of the upright image


def upscale_small(im: Image.Image, crop: int) -> tuple[Image.Image, float]:
    """The small-image rule of native crops: an image whose shorter side is under ``crop`` is
    upscaled (bicubic) until that side equals ``crop``, whatever its class. Returns the image
    and the factor applied (1.0: unchanged)."""
    w, h = im.size
    if min(w, h) >= crop:
        return im, 1.0
    scale = crop / min(w, h)
    return im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BICUBIC), scale


def center_crop(im: Image.Image, crop: int) -> Image.Image:
    """The centre ``crop`` x ``crop`` native crop (after the small-image rule)."""
    im, _ = upscale_small(im, crop)
    (box,) = crop_boxes(im.width, im.height, crop, 1)
    return im.crop(box)


def _grid(width: int, height: int, crop: int, n: int) -> tuple[int, int]:
    """Columns x rows: the most crops up to ``n`` that the image has room for side by side
    (about side / crop per axis, at least 1), shaped like the image."""
    cols_max, rows_max = max(1, round(width / crop)), max(1, round(height / crop))
    best, best_key = (1, 1), (1, 0.0)
    for cols in range(1, min(n, cols_max) + 1):
        for rows in range(1, min(n // cols, rows_max) + 1):
            key = (cols * rows, -abs(np.log((cols / rows) / (width / height))))
            if key > best_key:
                best, best_key = (cols, rows), key
    return best


def crop_boxes(width: int, height: int, crop: int, n: int) -> list[Box]:
    """Up to ``n`` crop boxes covering a ``width`` x ``height`` image on an even grid.

    The crops' centres sit at the centres of a cols x rows grid of equal cells (so a 512 px
    image with a 256 px crop and n = 4 is tiled exactly, and a 4000 x 3000 photo is sampled at
    four well-spread places); a crop never leaves the image. Deterministic: the same image
    always gets the same boxes. The image must be at least ``crop`` on both sides.
    """
    if n < 1:
        raise ValueError(f"crops must be at least 1, got {n}")
    if min(width, height) < crop:
        raise ValueError(f"a {width}x{height} image is smaller than the {crop} px crop (apply upscale_small first)")
    cols, rows = _grid(width, height, crop, n)

    def starts(side: int, k: int) -> list[int]:
        return [min(max(0, round((i + 0.5) * side / k - crop / 2)), side - crop) for i in range(k)]

    return [(x, y, x + crop, y + crop) for y in starts(height, rows) for x in starts(width, cols)]


def grid_count(width: int, height: int, crop: int, n: int) -> int:
    """How many boxes :func:`crop_boxes` places for ``n`` (at most ``n``; fewer where the image has
    no room for them side by side)."""
    cols, rows = _grid(width, height, crop, n)
    return cols * rows


def share_crops(total: int, views: list[tuple[int, int, int]]) -> list[int]:
    """How many of ``total`` crops each view gets; ``views`` are ``(width, height, crop side)``,
    the image's own pixels first.

    ``--crops N`` is the number of crops scored per image in all, whatever the model's scales:
    shared evenly between the views the image holds (the first gets the remainder), and what a
    view has no room for (a grid over a small image holds few) goes to the next ones, in order.
    So the counts add up to ``total`` wherever the image has room for that many, and never
    exceed it.
    """
    if total < 1:
        raise ValueError(f"crops must be at least 1, got {total}")
    k = len(views)
    want = [total // k + (i < total % k) for i in range(k)]
    got = [grid_count(w, h, side, n) if n else 0 for (w, h, side), n in zip(views, want)]
    for i, (w, h, side) in enumerate(views):
        spare = total - sum(got)
        if spare <= 0:
            break
        got[i] = grid_count(w, h, side, got[i] + spare)
    return got


def scaled_box(box: Box, scale: float, width: int, height: int) -> Box:
    if scale == 1.0:
        return box
    l, t, r, b = (round(v / scale) for v in box)
    return (max(0, l), max(0, t), min(width, r), min(height, b))


__all__ = ["Box", "center_crop", "crop_boxes", "grid_count", "scaled_box", "share_crops", "upscale_small"]
