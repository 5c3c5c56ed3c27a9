"""Tiny, learnable real/fake datasets made on the fly (no downloads, no shared/ needed).

"Real" images are smooth colour gradients with mild noise; "fake" ones carry a faint
high-frequency checkerboard, the kind of upsampling trace generators leave. Both classes
use the same sizes and the same encoder, so only content separates them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with a clear reason."""
    import pytest

    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared datasets beside the checkout")
    return path


def synthetic_image(rng: np.random.Generator, fake: bool, size: int = 32) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    arr = base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 4, (size, size, 3))
    if fake:
        checker = ((np.indices((size, size)).sum(0) % 2) * 2 - 1)[..., None]
        arr = arr + 40 * checker
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_dataset(root: Path, n_per_class: int = 40, generators: tuple[str, ...] = ("genA",), size: int = 32, seed: int = 0) -> Path:
    """Write ``root/real/*.png`` and ``root/fake/<gen>/*.png``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(n_per_class):
        (root / "real").mkdir(parents=True, exist_ok=True)
        synthetic_image(rng, False, size).save(root / "real" / f"r{i:04d}.png")
        gen = generators[i % len(generators)]
        (root / "fake" / gen).mkdir(parents=True, exist_ok=True)
        synthetic_image(rng, True, size).save(root / "fake" / gen / f"f{i:04d}.png")
    return root


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return archive


def stripes(rng: np.random.Generator) -> Image.Image:
    """A 'new generator' the trained model misses: a smooth image with faint vertical stripes."""
    arr = np.asarray(synthetic_image(rng, False, 32)).astype(float)
    arr[:, ::2] += 40
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
