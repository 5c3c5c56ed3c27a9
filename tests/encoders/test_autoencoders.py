"""The tiny autoencoders: our own loader for the zoo's weights, strict keys, real round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from aigi.encoders.autoencoders import (AUTOENCODERS, TinyAutoencoder, build_decoder, build_encoder, reconstruct_array, zoo_dir)


def _zoo() -> None:
    if not (zoo_dir() / "taesd_encoder.safetensors").exists():
        pytest.skip(f"{zoo_dir()} is absent: these tests need ../shared/zoo/tiny-autoencoders beside the checkout")


def _photo(size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.stack([200 * x + 20, 150 * y + 40, 100 * (x + y) / 2 + 60], -1) + np.random.default_rng(0).normal(0, 3, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(AUTOENCODERS))
def test_every_zoo_autoencoder_loads_strictly_and_reconstructs(name):
    _zoo()
    model = TinyAutoencoder.from_zoo(name)
    rgb = _photo(64)
    out = reconstruct_array(model, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    psnr = 10 * np.log10(255**2 / ((out.astype(float) - rgb) ** 2).mean())
    assert psnr > 22, f"{name}: PSNR {psnr:.1f} dB: a wrong architecture decodes noise"
    latent = model.encoder(torch.zeros(1, 3, 64, 64))
    assert latent.shape == (1, AUTOENCODERS[name].latent_channels, 8, 8)


def test_odd_sizes_and_tiles_keep_the_size():
    _zoo()
    model = TinyAutoencoder.from_zoo("taesd")
    rgb = _photo(90)[:, :75]
    assert reconstruct_array(model, rgb).shape == (90, 75, 3)
    tiled = reconstruct_array(model, _photo(160), tile=96)  # forces tiling
    assert tiled.shape == (160, 160, 3)


def test_wrong_weights_are_refused(tmp_path):
    spec = AUTOENCODERS["taesd"]
    enc = {k: v for k, v in build_encoder(spec).state_dict().items()}
    dec = {k: v for k, v in build_decoder(AUTOENCODERS["taesd3"]).state_dict().items()}  # 16-channel latent
    save_file(enc, str(tmp_path / "taesd_encoder.safetensors"))
    save_file(dec, str(tmp_path / "taesd_decoder.safetensors"))
    with pytest.raises(RuntimeError, match="size mismatch"):
        TinyAutoencoder.from_zoo("taesd", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        TinyAutoencoder.from_zoo("taef1", tmp_path)
    with pytest.raises(ValueError, match="unknown autoencoder"):
        TinyAutoencoder.from_zoo("vae-xl", tmp_path)
