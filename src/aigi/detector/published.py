"""Published detectors as registered names: ``--model univfd``.

A registered directory whose ``config.json`` says ``"architecture": "aigi.PublishedDetector"``
(:data:`aigi.detector.registry.PUBLISHED_ARCHITECTURE`) holds a published head and the recipe
of its input; :func:`load_published` puts it on its encoder (:mod:`aigi.encoders.published`:
UnivFD's CLIP ViT-L/14 tower, from the hub or ``$AIGI_CLIP_VIT_L14``) as an ordinary
:class:`~aigi.detector.model.Detector`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..encoders.published import CLIP_ENV, CLIP_L14, ProjectedCLIPEncoder, load_clip_l14
from ..io.preprocessing import Preprocessing


def load_published(detector_cls, path: Path, config: dict, device: str | torch.device = "cpu"):
    """The detector of a registered published model directory (``config.json`` with
    ``"architecture": "aigi.PublishedDetector"``), as a ``detector_cls``
    (:class:`~aigi.detector.model.Detector`, whose ``from_pretrained`` calls this and passes itself)."""
    from safetensors.torch import load_file

    if config.get("published") != "univfd":
        raise ValueError(f"{path / 'config.json'}: unknown published model {config.get('published')!r}")
    model, files = load_clip_l14()
    encoder = ProjectedCLIPEncoder(model)
    head = load_file(str(path / config["head"]))
    if encoder.feature_dim != head["weight"].shape[1]:
        raise ValueError(f"the CLIP weights give {encoder.feature_dim}-d image embeddings; the univfd head takes "
                         f"{head['weight'].shape[1]}: {CLIP_ENV} must name CLIP ViT-L/14")
    keep = {k: v for k, v in config.items() if k not in ("architecture", "published", "head", "preprocessing", "labels")}
    detector = detector_cls(encoder, Preprocessing.from_dict(config["preprocessing"]), config["labels"],
                        {**keep, "backbone": os.environ.get(CLIP_ENV) or CLIP_L14})
    with torch.no_grad():
        detector.binary_head.weight.copy_(head["weight"])
        detector.binary_head.bias.copy_(head["bias"])
        detector.source_head.weight.zero_()  # one label ("real"): the model names no generator
        detector.source_head.bias.zero_()
    detector.name_or_path = path.name
    detector.weights_files = [*files, path / config["head"]]
    detector.model_dir = path  # its licence and attribution go with anything made from it (aigi adapt)
    return detector.to(device).eval()


__all__ = ["load_published"]
