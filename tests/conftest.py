"""Shared fixtures: tiny images encoded in memory, and a small real/fake dataset folder."""

from __future__ import annotations

import io

import pytest
from PIL import Image


# relpath -> colour; labels and generators follow from the path.
LAYOUT_IMAGES = {
    "real/a.png": (200, 10, 10),
    "real/sub/deep/b.jpg": (10, 200, 10),
    "fake/sd15/x.png": (10, 10, 200),
    "fake/sd15/nested/more/z.jpg": (200, 200, 10),
    "fake/midjourney/v6/y.webp": (10, 200, 200),
}


def encode_image(im: Image.Image, fmt: str, **save_kwargs) -> bytes:
    """Encode a PIL image to bytes in ``fmt`` (PNG, JPEG, WEBP, ...)."""
    buf = io.BytesIO()
    im.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


@pytest.fixture
def encode():
    return encode_image


@pytest.fixture
def layout_dir(tmp_path):
    """A folder laid out ``real/**`` and ``fake/<generator>/**`` (nested), with non-image junk
    (README.txt, real/notes.txt) and an image outside the layout (other/stray.png).
    Returns the root; ``layout_images`` gives the expected image relpaths and colours."""
    root = tmp_path / "ds"
    for rel, colour in LAYOUT_IMAGES.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[f.suffix]
        f.write_bytes(encode_image(Image.new("RGB", (8, 6), colour), fmt))
    (root / "README.txt").write_text("not an image\n")
    (root / "real" / "notes.txt").write_text("not an image either\n")
    (root / "other").mkdir()
    (root / "other" / "stray.png").write_bytes(encode_image(Image.new("RGB", (4, 4)), "PNG"))
    return root


@pytest.fixture
def layout_images():
    return dict(LAYOUT_IMAGES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny-clip detector (random weights, one generator): fast to load and score."""
    import torch

    from aigi.detector.model import Detector

    torch.manual_seed(0)
    return Detector.from_backbone("tiny-clip", ["genA"]).save_pretrained(tmp_path_factory.mktemp("model"))


@pytest.fixture
def images(tmp_path):
    """A folder of 3 real and 3 fake synthetic PNGs plus one empty (unreadable) file."""
    from synthetic import make_dataset

    folder = make_dataset(tmp_path / "imgs", n_per_class=3)
    (folder / "real" / "empty.png").write_bytes(b"")
    return folder
