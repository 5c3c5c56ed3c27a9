"""file -> image -> crops -> tensor: the one path from any input to what a model sees.

:func:`load_input` is called by training, ``aigi detect``, ``Detector.predict`` (paths, bytes
and PIL images alike), the Ray actors, ``aigi serve`` and the benchmarks, so an image gets
the same pixels whichever way it arrives. It decodes (:mod:`aigi.data`: EXIF orientation,
8-bit RGB), places the crops, and normalises them.

Native crops (``Preprocessing.resize == "none"``, every model aigi trains):

- At inference an image is covered by up to ``crops`` square crops on an even grid
  (:func:`crop_boxes`), each taken at the image's own pixels. Their scores are combined by
  the model (mean logit, :mod:`aigi.model`), and each crop's score is kept.
- A model with ``scales`` (1.0, 0.5) also scores as many crops of the image seen at half size
  (a region twice the crop, resampled to it), where the image is large enough to hold one:
  they see more of the scene and survive a downscaled re-share. All crops' logits are averaged.
- An image whose shorter side is under the crop size is upscaled (bicubic) until that side
  equals the crop, then treated the same way: one rule for real and fake alike. Such an image
  has no native-resolution traces to show, so it is judged on what is left.
- An image whose shorter side is under ``min_side`` is too small to judge: it gets no crops and
  the result says so (a 16x16 icon is evidence of nothing).
- Training takes one random crop per draw, after the augmentations of :mod:`aigi.augment`
  (which resize, blur, add noise and re-encode *before* cropping, as a re-shared image is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .augment import augment_image, random_crop
from .preprocessing import Preprocessing, upscale_small
from .data import ImageDecodeError, Sample, decode_image, read_bytes, to_rgb

Box = tuple[int, int, int, int]  # (left, top, right, bottom), pixels of the upright image
Source = Union[Sample, str, os.PathLike, bytes, tuple[str, bytes], Image.Image]


@dataclass
class ModelInput:
    """What the model scores for one image: its crops and where they lie."""

    name: str
    pixels: np.ndarray  # (n_crops, 3, crop, crop) float32, normalised; n_crops == 0 when too small
    boxes: list[Box] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the upright image
    too_small: bool = False
    scales: list[float] = field(default_factory=list)  # each crop's view: 1.0 native, 0.5 half size
    evidence: dict | None = None  # what the file's metadata says (aigi.evidence), when asked for

    @property
    def n_crops(self) -> int:
        return len(self.pixels)


def source_name(source: Source, index: int = 0) -> str:
    """How a source is named in results: its path, its upload name, or ``<image i>``."""
    if isinstance(source, Sample):
        return source.display
    if isinstance(source, tuple):
        return source[0]
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<image {index}>"


def source_bytes(source: Source, name: str | None = None) -> bytes | None:
    """The encoded bytes of a source (read once, here), or None for a PIL image;
    :class:`~aigi.data.ImageDecodeError` when a file cannot be read."""
    if isinstance(source, Image.Image):
        return None
    if isinstance(source, tuple):
        return bytes(source[1])
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return read_bytes(source if isinstance(source, Sample) else Sample(os.fspath(source)))


def decode_source(source: Source, decode_size: int | None = None, name: str | None = None,
                  data: bytes | None = None) -> Image.Image:
    """Any source -> upright 8-bit RGB image; :class:`~aigi.data.ImageDecodeError` if unreadable.

    ``data``: the source's bytes when the caller has read them already (:func:`source_bytes`).
    A PIL image gets the EXIF orientation and RGB conversion a file would, so that the image
    opened by ``Image.open(path)`` and the path itself score the same.
    """
    if isinstance(source, Image.Image):
        try:
            return to_rgb(ImageOps.exif_transpose(source) or source)
        except Exception as e:  # a lazily loaded image can fail here, on its first pixel access
            raise ImageDecodeError(name or "<image>", f"cannot decode ({type(e).__name__}: {e})") from None
    if data is None:
        data = source_bytes(source, name)
    return decode_image(data, name or source_name(source), min_size=decode_size)


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


def _scaled_box(box: Box, scale: float, width: int, height: int) -> Box:
    if scale == 1.0:
        return box
    l, t, r, b = (round(v / scale) for v in box)
    return (max(0, l), max(0, t), min(width, r), min(height, b))


def load_input(
    source: Source,
    preprocessing: Preprocessing,
    crops: int | None = None,
    augment: str | None = None,
    rng: np.random.Generator | None = None,
    name: str | None = None,
    evidence: bool = False,
) -> ModelInput:
    """Decode ``source`` and turn it into model input, by the rules of the module docstring.

    ``crops``: how many native crops cover the image (default ``preprocessing.crops``).
    ``augment`` (an :data:`aigi.augment.LEVELS` name) with ``rng``: training's random
    augmentation and a single random crop. ``evidence``: also read what the file's metadata
    says (:func:`aigi.evidence.read_evidence`) from the same bytes, read once; a PIL image has
    none. Raises :class:`~aigi.data.ImageDecodeError`.
    """
    name = name or source_name(source)
    data = source_bytes(source, name)
    im = decode_source(source, preprocessing.decode_size, name, data=data)
    found = _evidence(data, name) if evidence and data is not None else None
    x = _model_input(im, name, preprocessing, crops, augment, rng)
    x.evidence = found
    return x


def _evidence(data: bytes, name: str) -> dict:
    from .evidence import read_evidence

    return read_evidence(data, name).to_dict()


def _model_input(im: Image.Image, name: str, preprocessing: Preprocessing, crops: int | None,
                 augment: str | None, rng: np.random.Generator | None) -> ModelInput:
    width, height = im.size
    if augment is not None and rng is None:
        raise ValueError("augment needs an rng (a numpy Generator)")
    if not preprocessing.native:
        if augment is not None:
            im = augment_image(im, rng, augment)
        pixels = preprocessing.normalise(preprocessing.resize_and_crop(im))[None]
        return ModelInput(name, pixels, [(0, 0, width, height)], (width, height))
    if min(width, height) < preprocessing.min_side:
        empty = np.zeros((0, 3, preprocessing.crop, preprocessing.crop), np.float32)
        return ModelInput(name, empty, [], (width, height), too_small=True)
    usable = preprocessing.usable_scales(width, height)
    if augment is not None:
        view = usable[int(rng.integers(len(usable)))] if len(usable) > 1 else 1.0
        crop_im = random_crop(im, preprocessing.crop, rng, augment, base_scale=view)
        return ModelInput(name, preprocessing.normalise(crop_im)[None], [], (width, height), scales=[view])
    n = crops or preprocessing.crops
    crop = preprocessing.crop
    up, upscale = upscale_small(im, crop)
    native = crop_boxes(up.width, up.height, crop, n)
    boxes = [_scaled_box(b, upscale, width, height) for b in native]
    arrays = [preprocessing.normalise(up.crop(b)) for b in native]
    scales = [1.0] * len(boxes)
    for view in usable[1:]:  # a region of crop / view px, resampled to the crop
        side = round(crop / view)
        for b in crop_boxes(width, height, side, n):
            boxes.append(b)
            arrays.append(preprocessing.normalise(im.resize((crop, crop), Image.Resampling.BICUBIC, box=b)))
            scales.append(view)
    return ModelInput(name, np.stack(arrays), boxes, (width, height), scales=scales)

