"""``aigi synth aligned``: aligned fakes, real photos passed through a generator's autoencoder.

    aigi synth aligned REAL... --autoencoder taesd|taesdxl|taesd3|taef1|taef2|all --out DIR

For every real image under ``REAL...`` (files, folders, zips) it writes, in aigi's layout,

    DIR/real/<name>                   the real image (centre crop, see below)
    DIR/fake/<autoencoder>/<name>     its round trip through that autoencoder

with the same name, the same size and the same encoding: both are saved from the decoded
pixels with the real file's own format and settings (a JPEG's quantisation tables and chroma
subsampling, so "same quality" holds exactly; PNG stays PNG), and no metadata. Real and fake
then differ only in the decoder's trace (Rajan et al., ICLR 2025; the autoencoders are the
tiny stand-ins of :mod:`aigi.encoders.autoencoders`).

- ``--max-side`` (default 512): a larger image is centre-cropped to at most that many pixels per
  side first, at native resolution (never resized): the traces live in the pixels, and a
  512 px round trip costs seconds on a CPU where a 12-megapixel one would cost minutes.
- ``DIR/aigi-dataset.json`` declares the dataset *paired*: its split rule hashes the name
  below ``real/`` or ``fake/<generator>/`` (:func:`aigi.io.samples.split_of`), so a real image and all
  its fakes always fall in the same split.
- Resumable: a file already written is skipped (files are written under a temporary name
  and renamed). A file that cannot be read is reported and skipped; the rest go on.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..io.files import iter_inputs, read_bytes
from ..io.inputs import decode_source
from ..io.samples import PAIRED_MARKER, ImageDecodeError, Sample

DEFAULT_MAX_SIDE = 512


@dataclass
class SynthSummary:
    out: str
    autoencoders: list[str]
    written: int = 0
    skipped_existing: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def pair_name(sample: Sample) -> str:
    """Where a real image goes below ``real/`` and ``fake/<ae>/``: its relative path, without a
    leading ``real/`` (a real folder of a dataset keeps its own sub-folders)."""
    rel = sample.relpath or os.path.basename(sample.path)
    parts = rel.split("/")
    return "/".join(parts[1:]) if parts[0].lower() == "real" and len(parts) > 1 else rel


def centre_crop_to(im: Image.Image, max_side: int | None) -> Image.Image:
    """At most ``max_side`` px per side, by a centre crop at native resolution; sides cut to a
    multiple of 8 (the autoencoders' grid) so real and fake have exactly the same size."""
    w, h = im.size
    cw, ch = (min(w, max_side), min(h, max_side)) if max_side else (w, h)
    cw, ch = max(8, cw - cw % 8), max(8, ch - ch % 8)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def encode_like(im: Image.Image, reference: bytes) -> tuple[bytes, str]:
    """``im`` encoded as ``reference`` is, and the file extension: JPEG with its quantisation
    tables and chroma subsampling, WebP lossless or at high quality, everything else PNG."""
    with Image.open(io.BytesIO(reference)) as ref:
        fmt = ref.format
        buf = io.BytesIO()
        if fmt in ("JPEG", "MPO"):
            from PIL import JpegImagePlugin

            sampling = JpegImagePlugin.get_sampling(ref)
            im.save(buf, "JPEG", qtables=ref.quantization, subsampling=sampling if sampling >= 0 else 0)
            return buf.getvalue(), ".jpg"
        if fmt == "WEBP":
            lossless = reference[12:16] == b"VP8L"
            im.save(buf, "WEBP", lossless=lossless, quality=100 if lossless else 95, method=4)
            return buf.getvalue(), ".webp"
        im.save(buf, "PNG")
        return buf.getvalue(), ".png"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def synth_aligned(
    reals: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    autoencoders: Iterable[str],
    max_side: int | None = DEFAULT_MAX_SIDE,
    progress: bool = True,
    threads: int | None = None,
    batch_size: int = 4,
) -> SynthSummary:
    """Write the aligned dataset (module docstring) and return what was done. Images of the
    same size go through the autoencoders ``batch_size`` at a time (about twice as fast on a CPU)."""
    import torch
    from tqdm.auto import tqdm

    from ..encoders.autoencoders import TinyAutoencoder, reconstruct_arrays

    if threads:
        torch.set_num_threads(threads)
    names = list(autoencoders)
    models = {name: TinyAutoencoder.from_zoo(name) for name in names}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PAIRED_MARKER).write_text(json.dumps({"paired": True, "made_by": "aigi synth aligned",
                                                 "autoencoders": names, "max_side": max_side}, indent=2) + "\n")
    summary = SynthSummary(str(out), names)
    started = time.time()
    samples = [s for s in iter_inputs(reals) if s.label in (-1, 0)]  # reals; fake/** of a dataset is left out
    waiting: dict[tuple[int, int], list[tuple[np.ndarray, bytes, dict[str, Path]]]] = {}

    def flush(size: tuple[int, int]) -> None:
        group = waiting.pop(size, [])
        if not group:
            return
        for n in names:
            todo = [(rgb, data, targets[n]) for rgb, data, targets in group if not targets[n].exists()]
            if todo:
                for (_, data, target), fake in zip(todo, reconstruct_arrays(models[n], [rgb for rgb, _, _ in todo])):
                    _write_atomic(target, encode_like(Image.fromarray(fake), data)[0])
        summary.written += len(group)

    bar = tqdm(samples, unit="img", desc="synth aligned", disable=not progress, dynamic_ncols=True)
    for sample in bar:
        stem = os.path.splitext(pair_name(sample))[0]
        try:
            data = read_bytes(sample)
            with Image.open(io.BytesIO(data)) as probe:
                ext = ".jpg" if probe.format in ("JPEG", "MPO") else ".webp" if probe.format == "WEBP" else ".png"
            targets = {"real": out / "real" / f"{stem}{ext}", **{n: out / "fake" / n / f"{stem}{ext}" for n in names}}
            if all(p.exists() for p in targets.values()):
                summary.skipped_existing += 1
                continue
            im = centre_crop_to(decode_source(sample), max_side)
            if not targets["real"].exists():
                _write_atomic(targets["real"], encode_like(im, data)[0])
            waiting.setdefault(im.size, []).append((np.asarray(im), data, targets))
            if len(waiting[im.size]) >= batch_size:
                flush(im.size)
        except (ImageDecodeError, OSError, ValueError) as e:
            reason = e.reason if isinstance(e, ImageDecodeError) else f"{type(e).__name__}: {e}"
            summary.errors.append((sample.display, reason))
            tqdm.write(f"skipped {sample.display}: {reason}", file=sys.stderr)
    for size in list(waiting):
        flush(size)
    summary.seconds = time.time() - started
    return summary
