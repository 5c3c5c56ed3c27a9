"""The encoders of published detectors, which aigi serves as registered names: ``--model univfd``.

**univfd** is UnivFD (Ojha, Li and Lee, "Towards Universal Fake Image Detectors that
Generalize Across Generative Models", CVPR 2023): OpenAI CLIP ViT-L/14's image embedding
(the 768-d projected output, ``CLIPVisionModelWithProjection.image_embeds``, which is what the
OpenAI ``clip`` package's ``encode_image`` returns) and one linear layer trained on ProGAN
fakes against real images; p_fake = sigmoid(logit), threshold 0.5. Its test transform is
``CenterCrop(224)`` at the image's own pixels, then CLIP's mean/std: aigi's native-crop input
with one 224 px crop (``--crops 4`` scores more of the image; images under 224 px are upscaled
by aigi's small-image rule where torchvision's CenterCrop would pad them with black).

The head (``models/univfd/univfd_head.safetensors``) was converted once, bit for bit, from
the authors' ``pretrained_weights/fc_weights.pth`` (:func:`convert_univfd_head`; MIT licence,
kept beside it with the attribution). The CLIP weights are not shipped: they come from the
Hugging Face hub (``openai/clip-vit-large-patch14``, 1.7 GB, fetched once into its cache) or
from a local copy named by ``AIGI_CLIP_VIT_L14=/path/to/clip-vit-large-patch14`` (a full CLIP
checkpoint or a ``CLIPVisionModelWithProjection`` directory). The detector itself (this tower and
the head) is put together by :func:`aigi.detector.published.load_published`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from .base import Encoder

CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_ENV = "AIGI_CLIP_VIT_L14"
PROJECTED = "clip-image-embeds"  # backbone_config["aigi_encoder"]: the CLIP image embedding, not the pooled token


class ProjectedCLIPEncoder(Encoder):
    """CLIP's image embedding (``visual_projection`` of the pooled class token) as the features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.feature_dim = int(model.config.projection_dim)
        model.config.aigi_encoder = PROJECTED  # saved with the config, so that a saved model rebuilds this encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, interpolate_pos_encoding=True).image_embeds


def projected_encoder_from_config(backbone_config: dict) -> ProjectedCLIPEncoder:
    """Random weights from a saved config (:func:`aigi.encoders.backbones.encoder_from_config` dispatches here)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    d = {k: v for k, v in backbone_config.items() if k not in ("model_type", "aigi_encoder")}
    return ProjectedCLIPEncoder(CLIPVisionModelWithProjection(CLIPVisionConfig(**d)))


def offline_message(source: str) -> str:
    return (f"univfd needs the OpenAI CLIP ViT-L/14 weights ({source}), which are not in the Hugging Face cache and "
            f"could not be downloaded: fetch them once where the hub is reachable (huggingface-cli download {CLIP_L14}) "
            f"or point {CLIP_ENV} at a local copy (a CLIP or CLIPVisionModelWithProjection directory)")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers on its port (a proxy, if set, is trusted to): asked
    before a download so that an offline machine hears why at once, not after a minute of retries."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def load_clip_l14(source: str | None = None) -> tuple[nn.Module, list[Path]]:
    """CLIP ViT-L/14's vision tower with its projection, and the weight files it came from
    (for :func:`aigi.inference.embed.model_identity`). ``source``: a local directory or hub id (default:
    ``$AIGI_CLIP_VIT_L14``, else the hub). Raises OSError with one line saying what to do."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    source = source or os.environ.get(CLIP_ENV) or CLIP_L14
    local = os.path.isdir(source)
    looks_like_path = source.startswith((os.sep, ".", "~")) or source.count("/") > 1  # a hub id is owner/name
    if not local and (os.path.exists(source) or looks_like_path):
        raise OSError(f"{CLIP_ENV}={source}: not a directory holding a CLIP checkpoint")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the text tower's unused weights are reported as unexpected keys
    hf_logging.disable_progress_bar()
    try:
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        except OSError:
            if local:
                raise OSError(f"{CLIP_ENV}={source}: no CLIP config.json there") from None
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or not hub_reachable():
                raise OSError(offline_message(source)) from None
            print(f"aigi: univfd: downloading {source} from the Hugging Face hub (1.7 GB, once)", file=sys.stderr)
            try:
                config = AutoConfig.from_pretrained(source)
            except OSError:
                raise OSError(offline_message(source)) from None
        vision = getattr(config, "vision_config", config)
        # A full CLIP config keeps projection_dim at its top level; the vision tower needs it.
        vision.projection_dim = getattr(config, "projection_dim", vision.projection_dim)
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(source, config=vision, dtype=torch.float32)
        except OSError:
            raise OSError(offline_message(source)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if local:
        files = sorted(Path(source).glob("*.safetensors"))
    else:  # the hub cache's copy, for the model's identity in feature files
        from transformers.utils import cached_file

        found = cached_file(source, "model.safetensors", local_files_only=True,
                            _raise_exceptions_for_missing_entries=False)
        files = [Path(found)] if found else []
    return model.eval(), files


def convert_univfd_head(pth: str | os.PathLike, out: str | os.PathLike) -> Path:
    """UnivFD's ``fc_weights.pth`` -> safetensors, bit for bit (read once, without unpickling code)."""
    from safetensors.torch import save_file

    state = torch.load(pth, map_location="cpu", weights_only=True)
    if set(state) != {"weight", "bias"} or tuple(state["weight"].shape) != (1, 768) or tuple(state["bias"].shape) != (1,):
        raise ValueError(f"{pth}: expected UnivFD's linear head (weight 1x768, bias 1), found "
                         f"{ {k: tuple(v.shape) for k, v in state.items()} }")
    out = Path(out)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={
        "source": "WisconsinAIVision/UniversalFakeDetect pretrained_weights/fc_weights.pth",
        "licence": "MIT (see LICENSE beside this file)", "converted_by": "aigi.encoders.published.convert_univfd_head"})
    return out


if __name__ == "__main__":  # python -m aigi.encoders.published fc_weights.pth univfd_head.safetensors
    print(convert_univfd_head(sys.argv[1], sys.argv[2]))
