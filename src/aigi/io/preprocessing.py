"""How an image becomes model input: the recipe a model was trained with (no torch needed).

:class:`Preprocessing` is stored in every model's ``config.json``; :func:`aigi.io.inputs.load_input`
applies it. It is read from a backbone's own ``preprocessor_config.json`` where one exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from .crops import center_crop

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NATIVE = "none"  # Preprocessing.resize value: crops at the image's own pixels, never resampled
RESIZE_MODES = ("shortest_edge", "exact", NATIVE)


@dataclass
class Preprocessing:
    """Image -> normalised float32 array(s) (3, crop, crop), as the model was trained to see them.

    ``resize`` says how an image becomes model input:

    - ``"none"`` (native crops, what aigi trains by default): square ``crop`` x ``crop`` crops
      taken at the image's own pixels, never resampled, so the pixel-level traces that tell
      generators from cameras survive (:func:`aigi.io.crops.crop_boxes` places ``crops`` of them
      over the image). An image whose shorter side is under ``crop`` is the one exception: it
      is upscaled (bicubic) until that side equals ``crop``, the same for every class. An
      image whose shorter side is under ``min_side`` is too small to judge.
    - ``"shortest_edge"`` (CLIP) or ``"exact"`` (DINOv2's BitImageProcessor): the whole image
      resized to ``size`` then centre-cropped to ``crop`` (how models before aigi 0.2 saw images).
    """

    size: int = 224
    crop: int = 224
    resize: str = "shortest_edge"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = Image.Resampling.BICUBIC
    crops: int = 1  # crops scored per image at each scale by default (native mode; ``--crops N`` gives N in all)
    min_side: int = 0  # shorter side below this: too small to judge (native mode)
    # Native mode: 1.0 is the image's own pixels; 0.5 adds crops of the image seen at half size
    # (a region twice the crop, resampled to it), which see more of the scene and survive a
    # downscaled re-share. A scale is used only where the image holds a whole crop at it.
    scales: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        d["scales"] = tuple(float(v) for v in d.get("scales", (1.0,)))
        if d.get("resize", "shortest_edge") not in RESIZE_MODES:
            raise ValueError(f"unknown preprocessing resize {d['resize']!r} (known: {', '.join(RESIZE_MODES)})")
        return cls(**d)

    @property
    def native(self) -> bool:
        return self.resize == NATIVE

    def native_crops(self, crop: int, crops: int = 1, min_side: int = 32,
                     scales: tuple[float, ...] = (1.0,)) -> "Preprocessing":
        """The same normalisation, as ``crop`` px native-resolution crops (at ``scales``)."""
        if not scales or scales[0] != 1.0 or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must start with 1.0 (the image's own pixels) and lie in (0, 1], got {scales}")
        return replace(self, size=crop, crop=crop, resize=NATIVE, crops=crops, min_side=min_side, scales=tuple(scales))

    def usable_scales(self, width: int, height: int) -> list[float]:
        """The scales at which a ``width`` x ``height`` image holds a whole crop (1.0 always)."""
        return [s for s in self.scales if s == 1.0 or min(width, height) * s >= self.crop]

    def with_size(self, size: int) -> "Preprocessing":
        """The same recipe at another input size. Native crops just change side; a resize recipe
        keeps its resize/crop ratio (CLIP's 224/224, ImageNet's 256/224)."""
        if self.native:
            return replace(self, size=size, crop=size)
        return replace(self, size=max(size, round(size * self.size / self.crop)), crop=size)

    @property
    def decode_size(self) -> int | None:
        """Decoders may shrink an image while both sides stay at least this large
        (:func:`aigi.io.decode.decode_image`); None: decode at full size. Native crops need every
        pixel as it is. A resize recipe downsamples anyway: twice its resize target, so the
        final resample still sees enough pixels to antialias."""
        return None if self.native else 2 * self.size

    def resize_and_crop(self, im: Image.Image) -> Image.Image:
        """The whole-image recipe (``resize`` other than ``"none"``)."""
        w, h = im.size
        if self.resize == "shortest_edge":  # integer sizes exactly as transformers' processors
            new_w, new_h = (self.size, int(self.size * h / w)) if w <= h else (int(self.size * w / h), self.size)
        else:
            new_w = new_h = self.size
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        crop_w, crop_h = min(self.crop, new_w), min(self.crop, new_h)
        left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
        # Resize only the source box that survives the crop: same pixels as resize-then-crop,
        # but a 20000x10 image never becomes a 448000x224 intermediate.
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        return im.resize((self.crop, self.crop), self.resample, box=box)

    def normalise(self, im: Image.Image) -> np.ndarray:
        """A crop-sized RGB image -> float32 (3, H, W), scaled to [0, 1] then mean/std."""
        arr = np.asarray(im, dtype=np.float32) * (1.0 / 255.0)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def __call__(self, im: Image.Image) -> np.ndarray:
        """One model input from an image: the whole-image recipe, or the centre native crop.
        Scoring code goes through :func:`aigi.io.inputs.load_input`, which places every crop."""
        return self.normalise(center_crop(im, self.crop) if self.native else self.resize_and_crop(im))


def preprocessing_from_processor_dict(d: dict) -> Preprocessing:
    """Read a Hugging Face ``preprocessor_config.json`` dict (CLIP, Bit/DINOv2, ViT, SigLIP)."""
    size = d.get("size", 224)
    crop = d.get("crop_size", size) if d.get("do_center_crop", True) else size
    if isinstance(size, dict) and "shortest_edge" in size:
        resize, size_px = "shortest_edge", int(size["shortest_edge"])
    elif isinstance(size, dict):
        resize, size_px = "exact", int(size.get("height", 224))
    else:
        resize, size_px = "shortest_edge", int(size)
    crop_px = int(crop["height"]) if isinstance(crop, dict) and "height" in crop else (
        int(crop.get("shortest_edge", size_px)) if isinstance(crop, dict) else int(crop)
    )
    return Preprocessing(
        size=size_px,
        crop=crop_px,
        resize=resize,
        mean=tuple(d.get("image_mean", CLIP_MEAN)),
        std=tuple(d.get("image_std", CLIP_STD)),
        resample=int(d.get("resample", Image.Resampling.BICUBIC)),
    )
