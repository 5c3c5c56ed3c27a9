"""Derived benchmark datasets, built from ../shared/data with one re-encoding for every class.

Format must give nothing away: every image of a derived set, real or fake, goes through the
same pipeline (decode -> RGB -> same geometry -> JPEG quality 95, 4:4:4, no metadata), the
rule of shared/data/README.md. The sets are written outside the repository (a cache folder)
with the original relative paths, so the public split rule applies to them unchanged.

    python -m benchmarks.datasets generalization   # sd15-styles fakes vs real-photos-dev reals
    python -m benchmarks.datasets attribution      # real / sd14 / deliberate-2-0 / dreamshaper-3-2
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from aigi.io.decode import decode_image

from .harness import SHARED

SHARED_DATA = SHARED / "data"
CACHE = Path(os.environ.get("AIGI_BENCH_CACHE", Path.home() / ".cache" / "aigi" / "bench"))
JPEG = dict(format="JPEG", quality=95, subsampling=0)  # the rule: q95, 4:4:4, no metadata
GENERALIZATION_CROP = 320  # the smallest real photo side is 321 px: equal-size crops for all
ATTRIBUTION_SIZE = 32  # CIFAKE's size: every source is downscaled to it the same way
ATTRIBUTION_CIFAKE_PER_CLASS = 3000
# Colour camera photos that scikit-image ships in its wheel (BSD-3). Its greyscale photos
# (camera, coins, moon, ...) are left out: every fake is in colour, so grey would mark "real".
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        raise SystemExit(f"{path} is absent: the benchmarks need ../shared/data beside the checkout")
    return path


def _seeded(name: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))


def random_crop(im: Image.Image, size: int, name: str) -> Image.Image:
    """A square crop at a position fixed by the file name (same rule for both classes)."""
    rng = _seeded(name)
    w, h = im.size
    if min(w, h) < size:
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.LANCZOS)
        w, h = im.size
    left, top = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    return im.crop((left, top, left + size, top + size))


def downscale_square(im: Image.Image, size: int) -> Image.Image:
    """Centre square crop, then Lanczos down to size x size."""
    w, h = im.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return im.resize((size, size), Image.Resampling.LANCZOS, box=box)


def _write(im: Image.Image, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, **JPEG)
    out.write_bytes(buf.getvalue())


def _members(archive: Path, prefix: str = ""):
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith("/") and name.startswith(prefix):
                yield name, zf.read(name)


def _jpg_name(member: str) -> str:
    return str(Path(member).with_suffix(".jpg"))


def build_generalization(root: Path | None = None) -> Path:
    """sd15-styles fakes (2 generators CIFAKE never had) vs real-photos-dev reals, 320 px crops."""
    root = root or CACHE / f"generalization-{GENERALIZATION_CROP}"
    if (root / ".complete").exists():
        return root
    for archive in (shared("real-photos-dev.zip"), shared("sd15-styles.zip")):
        for name, data in _members(archive):
            im = decode_image(data, name)
            _write(random_crop(im, GENERALIZATION_CROP, name), root / _jpg_name(name))
    (root / ".complete").write_text("ok\n")
    return root


def skimage_photos() -> dict[str, Image.Image]:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("the attribution set includes scikit-image's photos: pip install -e '.[bench]'") from None
    return {name: Image.fromarray(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS}


def build_attribution(root: Path | None = None) -> Path:
    """real (CIFAKE, real-photos-dev, scikit-image photos), sd14 (CIFAKE), deliberate-2-0,
    dreamshaper-3-2, all at 32 px."""
    root = root or CACHE / f"attribution-{ATTRIBUTION_SIZE}-v2"
    if (root / ".complete").exists():
        return root
    for name, im in skimage_photos().items():
        _write(downscale_square(im, ATTRIBUTION_SIZE), root / "real" / "scikit-image" / f"{name}.jpg")
    cifake = shared("cifake-dev.zip")
    for prefix in ("real/", "fake/sd14/"):
        names = [n for n, _ in _members(cifake, prefix)]
        keep = set(np.random.default_rng(0).choice(names, ATTRIBUTION_CIFAKE_PER_CLASS, replace=False))
        with zipfile.ZipFile(cifake) as zf:
            for name in sorted(keep):
                _write(downscale_square(decode_image(zf.read(name), name), ATTRIBUTION_SIZE), root / _jpg_name(name))
    for archive in (shared("real-photos-dev.zip"), shared("sd15-styles.zip")):
        for name, data in _members(archive):
            _write(downscale_square(decode_image(data, name), ATTRIBUTION_SIZE), root / _jpg_name(name))
    (root / ".complete").write_text("ok\n")
    return root


BUILDERS = {"generalization": build_generalization, "attribution": build_attribution}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(BUILDERS))
    args = parser.parse_args(argv)
    print(BUILDERS[args.which]())


if __name__ == "__main__":
    main()
