"""file -> image -> crops -> tensor: the one path from any input to what a model sees.

:func:`load_input` is called by training, ``aigi detect``, ``Detector.predict`` (paths, bytes
and PIL images alike), the Ray actors, ``aigi serve`` and the benchmarks, so an image gets
the same pixels whichever way it arrives. It decodes (:mod:`aigi.io.decode`: EXIF orientation,
8-bit RGB), places the crops, and normalises them.

Native crops (``Preprocessing.resize == "none"``, every model aigi trains):

- At inference an image is covered by up to ``preprocessing.crops`` square crops on an even grid
  (:func:`crop_boxes`), each taken at the image's own pixels. Their scores are combined by
  the model (mean logit, :mod:`aigi.detector.scoring`), and each crop's score is kept.
- A model with ``scales`` (1.0, 0.5) also scores as many crops of the image seen at half size
  (a region twice the crop, resampled to it), where the image is large enough to hold one:
  they see more of the scene and survive a downscaled re-share. All crops' logits are averaged.
- ``crops=N`` (``--crops N``) is the number of crops in all, not per scale: N is shared between
  the scales the image holds (:func:`aigi.io.crops.share_crops`), so an image gets at most N.
- An image whose shorter side is under the crop size is upscaled (bicubic) until that side
  equals the crop, then treated the same way: one rule for real and fake alike. Such an image
  has no native-resolution traces to show, so it is judged on what is left.
- An image whose shorter side is under ``min_side`` is too small to judge: it gets no crops and
  the result says so (a 16x16 icon is evidence of nothing).
- Training takes one random crop per draw, after the augmentations of :mod:`aigi.io.augment`
  (which resize, blur, add noise and re-encode *before* cropping, as a re-shared image is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .augment import augment_image, policy_crop, policy_set, random_crop
from .crops import Box, crop_boxes, scaled_box, share_crops, upscale_small
from .decode import decode_image, to_rgb
from .files import read_bytes
from .preprocessing import Preprocessing
from .samples import ImageDecodeError, Sample

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
    policy: str = ""  # training: the augmentation policy this draw was made with (aigi.io.augment.POLICIES)
    evidence: dict | None = None  # what the file's metadata says (aigi.forensics.evidence), when asked for

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
    :class:`~aigi.io.samples.ImageDecodeError` when a file cannot be read."""
    if isinstance(source, Image.Image):
        return None
    if isinstance(source, tuple):
        return bytes(source[1])
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return read_bytes(source if isinstance(source, Sample) else Sample(os.fspath(source)))


def decode_source(source: Source, decode_size: int | None = None, name: str | None = None,
                  data: bytes | None = None) -> Image.Image:
    """Any source -> upright 8-bit RGB image; :class:`~aigi.io.samples.ImageDecodeError` if unreadable.

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


def load_input(
    source: Source,
    preprocessing: Preprocessing,
    crops: int | None = None,
    augment: str | None = None,
    rng: np.random.Generator | None = None,
    name: str | None = None,
    data: bytes | None = None,
) -> ModelInput:
    """Decode ``source`` and turn it into model input, by the rules of the module docstring.

    ``crops``: how many crops the image gets in all, shared between the model's scales (default:
    ``preprocessing.crops`` at each scale the image holds).
    ``augment`` (an :data:`aigi.io.augment.LEVELS` name, or policies joined by ``+``) with ``rng``:
    training's random augmentation and a single random crop. ``data``: the source's bytes when the caller has
    read them already (:func:`source_bytes`), so that they are read once; what the file's
    metadata says is read from them beside this path (:func:`aigi.forensics.evidence.load_with_evidence`).
    Raises :class:`~aigi.io.samples.ImageDecodeError`.
    """
    name = name or source_name(source)
    im = decode_source(source, preprocessing.decode_size, name, data=data)
    return _model_input(im, name, preprocessing, crops, augment, rng)


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
    policies = policy_set(augment) if augment is not None else None
    if policies is not None:  # one change per draw, named
        policy = policies[int(rng.integers(len(policies)))]
        crop_im = policy_crop(im, preprocessing.crop, policy, rng)
        view = 0.5 if policy == "half" and min(width, height) >= 2 * preprocessing.crop else 1.0
        return ModelInput(name, preprocessing.normalise(crop_im)[None], [], (width, height), scales=[view], policy=policy)
    if augment is not None:
        view = usable[int(rng.integers(len(usable)))] if len(usable) > 1 else 1.0
        crop_im = random_crop(im, preprocessing.crop, rng, augment, base_scale=view)
        return ModelInput(name, preprocessing.normalise(crop_im)[None], [], (width, height), scales=[view])
    crop = preprocessing.crop
    up, upscale = upscale_small(im, crop)
    sides = [round(crop / view) for view in usable[1:]]  # a region of crop / view px, resampled to the crop
    if crops is None:  # the model's own: preprocessing.crops at every scale the image holds
        counts = [preprocessing.crops] * len(usable)
    else:  # crops in all, shared between the scales (aigi.io.crops.share_crops)
        counts = share_crops(crops, [(up.width, up.height, crop), *((width, height, side) for side in sides)])
    native = crop_boxes(up.width, up.height, crop, counts[0]) if counts[0] else []
    boxes = [scaled_box(b, upscale, width, height) for b in native]
    arrays = [preprocessing.normalise(up.crop(b)) for b in native]
    scales = [1.0] * len(boxes)
    for view, side, n in zip(usable[1:], sides, counts[1:]):
        if not n:
            continue
        for b in crop_boxes(width, height, side, n):
            boxes.append(b)
            arrays.append(preprocessing.normalise(im.resize((crop, crop), Image.Resampling.BICUBIC, box=b)))
            scales.append(view)
    return ModelInput(name, np.stack(arrays), boxes, (width, height), scales=scales)
