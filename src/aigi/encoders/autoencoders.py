"""Tiny autoencoders of latent-diffusion generators (the TAESD family), in plain torch.

Every latent diffusion generator ends in a VAE decoder that turns a latent into pixels. These
small distilled stand-ins (Ollin Boer Bohan's TAESD, MIT; weights in
``../shared/zoo/tiny-autoencoders/``) let :mod:`aigi.training.synth` make *aligned* fakes: a real photo
through an encoder and decoder keeps its content and size and gains a decoder's traces.

Architecture (from the zoo README; state-dict keys are the indices of one ``nn.Sequential``):

- Block(c): ``conv, ReLU, conv, ReLU, conv`` added to the identity, then ReLU (keys
  ``N.conv.0/2/4``). FLUX.2 only: the Blocks of the encoder's last stage and of the decoder's
  first stage first add ``x + pool(x)``, pool = 1x1 conv(64, 256), GroupNorm(4, 256), ReLU,
  1x1 conv(256, 64) (keys ``N.pool.0/1/3``).
- Encoder: ``conv(3,64), Block, conv(s2), Block x3, conv(s2), Block x3, conv(s2), Block x3,
  conv(64, latent)``: 8x smaller per side.
- Decoder: ``tanh(x/3)*3, conv(latent,64), ReLU, Block x3, [Upsample x2, conv, Block x3] x2,
  Upsample x2, conv, Block, conv(64,3)``.

Pixels are RGB in [0, 1] in and out. Weights load with safetensors and strict keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

ZOO = Path(__file__).resolve().parents[4] / "shared" / "zoo" / "tiny-autoencoders"
WIDTH = 64


@dataclass(frozen=True)
class AutoencoderSpec:
    name: str
    stands_for: str
    latent_channels: int
    pooled: bool = False  # the FLUX.2 variant's pooled blocks


AUTOENCODERS: dict[str, AutoencoderSpec] = {s.name: s for s in (
    AutoencoderSpec("taesd", "Stable Diffusion 1.x / 2.x", 4),
    AutoencoderSpec("taesdxl", "SDXL", 4),
    AutoencoderSpec("taesd3", "Stable Diffusion 3 / 3.5", 16),
    AutoencoderSpec("taef1", "FLUX.1", 16),
    AutoencoderSpec("taef2", "FLUX.2", 32, pooled=True),
)}


def zoo_dir() -> Path:
    """Where the weights are: ``$AIGI_AUTOENCODERS`` or ``../shared/zoo/tiny-autoencoders``."""
    return Path(os.environ.get("AIGI_AUTOENCODERS", ZOO))


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Pool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.Conv2d(WIDTH, 256, 1, bias=False), nn.GroupNorm(4, 256), nn.ReLU(),
                                  nn.Conv2d(256, WIDTH, 1, bias=False))


class Block(nn.Module):
    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH), nn.ReLU(), _conv(WIDTH, WIDTH))
        if pooled:
            self.pool = Pool().pool
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pool"):
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def build_encoder(spec: AutoencoderSpec) -> nn.Sequential:
    def stage(pooled: bool = False) -> list[nn.Module]:
        return [_conv(WIDTH, WIDTH, stride=2, bias=False), Block(pooled), Block(pooled), Block(pooled)]

    return nn.Sequential(_conv(3, WIDTH), Block(), *stage(), *stage(), *stage(spec.pooled),
                         _conv(WIDTH, spec.latent_channels))


def build_decoder(spec: AutoencoderSpec) -> nn.Sequential:
    def stage() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]

    p = spec.pooled
    return nn.Sequential(Clamp(), _conv(spec.latent_channels, WIDTH), nn.ReLU(), Block(p), Block(p), Block(p),
                         *stage(), Block(), Block(), Block(), *stage(), Block(), Block(), Block(), *stage(), Block(),
                         _conv(WIDTH, 3))


class TinyAutoencoder(nn.Module):
    """Encoder + decoder of one generator family; ``reconstruct`` is the round trip."""

    def __init__(self, spec: AutoencoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = build_encoder(spec)
        self.decoder = build_decoder(spec)

    @classmethod
    def from_zoo(cls, name: str, directory: str | os.PathLike | None = None) -> "TinyAutoencoder":
        """Load ``<name>_encoder.safetensors`` and ``<name>_decoder.safetensors`` (strict keys, fp32)."""
        if name not in AUTOENCODERS:
            raise ValueError(f"unknown autoencoder {name!r}; choose one of {', '.join(AUTOENCODERS)}")
        directory = Path(directory) if directory else zoo_dir()
        model = cls(AUTOENCODERS[name])
        for part in ("encoder", "decoder"):
            path = directory / f"{name}_{part}.safetensors"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: the tiny autoencoders live in ../shared/zoo/tiny-autoencoders "
                                        "(or set AIGI_AUTOENCODERS)")
            state = {k: v.float() for k, v in load_file(str(path)).items()}
            getattr(model, part).load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)

    @torch.inference_mode()
    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> the decoded round trip, clamped to [0, 1]."""
        if pixels.shape[-1] % 8 or pixels.shape[-2] % 8:
            raise ValueError(f"sides must be multiples of 8, got {tuple(pixels.shape[-2:])}")
        return self.decoder(self.encoder(pixels)).clamp(0, 1)


def reconstruct_arrays(model: TinyAutoencoder, images: list[np.ndarray], tile: int = 512) -> list[np.ndarray]:
    """Same-size (H, W, 3) uint8 images through the autoencoder in one batch, returned as
    uint8 of the same size.

    Each is padded by reflection to multiples of 8 (then cut back), and processed in tiles of
    at most ``tile`` px with an overlap of 32 px so that memory stays bounded on large photos;
    each output pixel comes from the tile it is most central in. Computed in float32, in
    channels-last layout (oneDNN's fast one for CPU convolutions): bfloat16 would change the
    decoder's trace, the very thing the output is for.
    """
    h, w = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError("reconstruct_arrays needs images of one size; call it once per size")
    x = torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2) / 255.0
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > 8 else "replicate")
    x = x.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    H, W = x.shape[-2:]
    if H <= tile and W <= tile:
        out = model.reconstruct(x)
    else:
        out = torch.empty_like(x)
        margin, step = 32, tile - 64
        for top in range(0, H, step):
            for left in range(0, W, step):
                t0, l0 = max(0, top - margin), max(0, left - margin)
                t1, l1 = min(H, top + step + margin), min(W, left + step + margin)
                t0, l0 = t0 - t0 % 8, l0 - l0 % 8
                t1, l1 = min(H, t1 + (-t1) % 8), min(W, l1 + (-l1) % 8)
                rec = model.reconstruct(x[..., t0:t1, l0:l1])
                bb, br = min(H, top + step), min(W, left + step)
                out[..., top:bb, left:br] = rec[..., top - t0:bb - t0, left - l0:br - l0]
    out = (out[..., :h, :w].permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return list(out)


def reconstruct_array(model: TinyAutoencoder, rgb: np.ndarray, tile: int = 512) -> np.ndarray:
    """One (H, W, 3) uint8 image through the autoencoder (see :func:`reconstruct_arrays`)."""
    return reconstruct_arrays(model, [rgb], tile)[0]
