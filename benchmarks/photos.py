"""Synthetic photo-like JPEGs for the speed benchmarks: gradients, a light blob, texture, shapes,
fine detail and sensor noise (what makes real JPEGs cost bits to decode), seeded per image.
Used by ``throughput``, ``camera_size`` and ``serve_load``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .harness import n_cpus


def synthetic_photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like RGB image: gradients, a soft light blob, low-frequency texture, shapes, noise."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / np.float32(size)
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.5)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(2 * r * r))
    img += rng.uniform(-70, 70, 3).astype(np.float32) * blob[..., None]
    texture = Image.fromarray(rng.integers(0, 256, (int(rng.integers(4, 12)),) * 2 + (3,), dtype=np.uint8))
    img = 0.75 * img + 0.25 * np.asarray(texture.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGBA")
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(80, 230)),)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        x1, y1 = x0 + rng.uniform(0.05, 0.6) * size, y0 + rng.uniform(0.05, 0.6) * size
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * size], fill=colour)
    im = Image.alpha_composite(im, overlay).convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    # Fine detail (foliage, fabric, gravel) and sensor noise: what makes real JPEGs cost bits to decode.
    detail = rng.integers(0, 256, (max(size // 3, 2),) * 2 + (1,), dtype=np.uint8).repeat(3, axis=2)
    detail = np.asarray(Image.fromarray(detail).resize((w, h), Image.Resampling.BILINEAR), np.float32) - 128
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(3, 8))
    pixels = np.asarray(im, np.float32) + np.float32(rng.uniform(0.1, 0.35)) * detail + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_images(folder: Path, n: int, size: int, seed: int, quality: int = 90, start: int = 0) -> list[Path]:
    """``n`` seeded synthetic JPEGs ``img_000000.jpg``... in ``folder`` (existing ones are kept)."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:06d}.jpg" for i in range(start, start + n)]

    def make(i: int) -> None:
        path = paths[i - start]
        if not path.exists():  # each image has its own seed: the same files whatever the thread order
            synthetic_photo(np.random.default_rng([seed, size, i]), size).save(path, "JPEG", quality=quality)

    with ThreadPoolExecutor(n_cpus()) as pool:
        list(pool.map(make, range(start, start + n), chunksize=64))
    return paths


def subset_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding exactly ``paths`` (hard links; copies where links are not possible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        dst = folder / p.name
        if not dst.exists():
            try:
                os.link(p, dst)
            except OSError:
                shutil.copyfile(p, dst)
    return folder


__all__ = ["make_images", "subset_folder", "synthetic_photo"]
