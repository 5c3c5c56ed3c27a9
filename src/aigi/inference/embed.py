"""Encoder features of many images, written to disk (``aigi embed``), and read back.

For every image: its **pooled features** (the mean of its crops' encoder features; the heads
are linear, so the heads of this vector are exactly the image's mean crop logits, the scores
``aigi detect`` gives), each crop's own features and box, and its path, label and generator.
With them a linear probe or a new head trains in seconds, without touching a pixel again
(:mod:`aigi.training.adapt` starts here).

**Format: safetensors shards with JSON sidecars** (no pyarrow needed; safetensors is already
how aigi stores tensors, and it never unpickles)::

    OUT/features.json              what made the features: model name, sha256 of its weights
                                   file, encoder digest, preprocessing, crops, feature_dim
    OUT/shard-00000.safetensors    features (n, D) float32   pooled: mean over the image's crops
                                   crop_features (m, D)      every crop, image after image
                                   n_crops (n,) int32        crops per image (rows of crop_features)
                                   boxes (m, 4) int32        left, top, right, bottom in image pixels
                                   labels (n,) int8          0 real, 1 AI-generated, -1 unknown
                                   image_size (n, 2) int32   width, height
    OUT/shard-00000.json           paths, generators; unreadable files and images too small to
                                   judge (path, reason), which have no features
    ...

**Resuming.** A shard is written as two files, tensors first, each to a temporary name then
renamed; the sidecar is the commit. A re-run reads every committed sidecar, deletes tensors
whose sidecar never came (a kill between the two renames), skips every image already
recorded (features, error or too small) and continues with the next shard number, so a run
killed at any moment and run again ends with exactly one record per image. A run with
another model or crop count is refused (``overwrite=True`` starts afresh).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from .. import __version__
from ..io.datasets import ImageDataset, load_dataset
from ..io.decode import DECODE_WORKERS
from ..io.inputs import ModelInput
from ..io.samples import Sample
from .detect import crop_batches, iter_decoded, select_inputs

if TYPE_CHECKING:
    from ..detector.model import Detector

FORMAT = "aigi-features"
FORMAT_VERSION = 1
MANIFEST = "features.json"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.json$")


# ----------------------------------------------------------------------------- identity


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def encoder_digest(detector: "Detector") -> str:
    """sha256 of the encoder's tensors (names, dtypes, shapes, bytes) as loaded: equal for two
    detectors exactly when their encoders compute the same features. Features made with one
    encoder are only valid for heads on that encoder (:mod:`aigi.training.adapt` checks it)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(detector.encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
            t = t.view(torch.int16)
        h.update(t.reshape(-1).numpy().tobytes())
    return h.hexdigest()


def model_identity(detector: "Detector") -> dict:
    """What a feature file was made with: name, sha256 of the weights file (or, for models
    built from several sources such as ``univfd``, of their files as recorded), the encoder
    digest, preprocessing and feature size."""
    files = [Path(p) for p in getattr(detector, "weights_files", None) or
             ([detector.weights_path] if getattr(detector, "weights_path", None) else [])]
    digest = hashlib.sha256()
    for f in files:
        digest.update(sha256_file(f).encode())
    return {
        "name": getattr(detector, "name_or_path", ""),
        "weights_sha256": (sha256_file(files[0]) if len(files) == 1 else digest.hexdigest()) if files else None,
        "weights_files": [f.name for f in files],
        "encoder_sha256": encoder_digest(detector),
        "backbone": detector.config.get("backbone", ""),
        "labels": list(detector.labels),
        "preprocessing": detector.preprocessing.to_dict(),
        "feature_dim": int(detector.encoder.feature_dim),
    }


# ----------------------------------------------------------------------------- computing features


@dataclass
class Embedded:
    """One image's record: features, or the reason it has none."""

    sample: Sample
    features: np.ndarray | None = None  # (D,) pooled
    crop_features: np.ndarray | None = None  # (n_crops, D)
    boxes: list = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    error: str = ""  # unreadable
    too_small: bool = False


def iter_embedded(detector: "Detector", samples: Iterable[Sample], batch_size: int = 32,
                  workers: int = DECODE_WORKERS, crops: int | None = None, autocast: bool = False) -> Iterator[Embedded]:
    """One :class:`Embedded` per sample, in order; decoding in ``workers`` threads, ``batch_size``
    crops per forward pass. Unreadable files come back with ``error``, never raise."""
    detector.eval()
    inflight = max(2 * batch_size, max(1, workers) * batch_size * 2)
    for group in crop_batches(iter_decoded(samples, detector.preprocessing, workers, inflight, crops), batch_size):
        inputs = [x for _, x in group if isinstance(x, ModelInput) and x.n_crops]
        pixels = np.concatenate([x.pixels for x in inputs]) if inputs else np.zeros((0,))
        feats = [detector.crop_features(pixels[i:i + batch_size], autocast=autocast) for i in range(0, len(pixels), batch_size)]
        feats = np.concatenate(feats) if feats else None
        start = 0
        for sample, x in group:
            if not isinstance(x, ModelInput):
                yield Embedded(sample, error=x.reason)
            elif not x.n_crops:
                yield Embedded(sample, image_size=x.image_size, too_small=True)
            else:
                f = feats[start:start + x.n_crops]
                start += x.n_crops
                yield Embedded(sample, f.mean(axis=0), f, list(x.boxes), x.image_size)


def collect_samples(inputs: ImageDataset | Iterable[Sample] | Sequence[str | os.PathLike], split: str = "all") -> list[Sample]:
    """Samples from a dataset, samples, or paths (files, folders, zips and CSV manifests), each once."""
    if isinstance(inputs, ImageDataset):
        return list(inputs.samples)
    items = list(inputs)
    if all(isinstance(x, Sample) for x in items):
        return items
    samples: list[Sample] = []
    seen: set[str] = set()
    for p in items:
        p = os.fspath(p)
        found = load_dataset(p, split).samples if p.lower().endswith(".csv") else select_inputs([p], split)
        for s in found:
            if s.display not in seen:
                seen.add(s.display)
                samples.append(s)
    return samples


# ----------------------------------------------------------------------------- writing


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class FeatureWriter:
    """Shards of :class:`Embedded` records in ``out`` (module docstring); resumes what it finds."""

    def __init__(self, out: str | os.PathLike, identity: dict, crops: int, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out}: --out must be a directory (features are written there as shards)")
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "aigi_version": __version__, "model": identity,
                    "crops": crops}
        if overwrite:
            for f in self.out.iterdir():
                if f.name == MANIFEST or f.name.startswith("shard-"):
                    f.unlink()
        old = self.out / MANIFEST
        if old.exists():
            have = json.loads(old.read_text(encoding="utf-8"))
            mine = json.loads(json.dumps({k: manifest["model"].get(k) for k in ("encoder_sha256", "preprocessing")}))
            theirs = {k: have.get("model", {}).get(k) for k in mine}
            if have.get("format") != FORMAT or theirs != mine or have.get("crops") != crops:
                raise ValueError(f"{self.out} holds features of another model or crop count "
                                 f"({have.get('model', {}).get('name')!r}, {have.get('crops')} crops); "
                                 "pass --overwrite or choose another --out")
        else:
            _atomic_write(old, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8"))
        self.done: set[str] = set()
        self.next_index = 0
        for f in sorted(self.out.glob("shard-*.safetensors")):  # tensors whose sidecar never came
            if not f.with_suffix(".json").exists():
                f.unlink()
        for f in self.out.glob("*.tmp"):
            f.unlink()
        for f in sorted(self.out.iterdir()):
            m = SHARD_RE.match(f.name)
            if m:
                side = json.loads(f.read_text(encoding="utf-8"))
                self.done.update(side["paths"])
                self.done.update(e["path"] for e in side["errors"] + side["too_small"])
                self.next_index = max(self.next_index, int(m.group(1)) + 1)
        self.n_already = len(self.done)

    def write(self, records: Sequence[Embedded]) -> None:
        """One shard of records (features, errors and too-small images alike)."""
        from safetensors.numpy import save_file

        if not records:
            return
        good = [r for r in records if r.features is not None]
        dim = good[0].features.shape[0] if good else 0
        tensors = {
            "features": np.stack([r.features for r in good]).astype(np.float32) if good else np.zeros((0, dim), np.float32),
            "crop_features": (np.concatenate([r.crop_features for r in good]).astype(np.float32) if good
                              else np.zeros((0, dim), np.float32)),
            "n_crops": np.array([len(r.crop_features) for r in good], np.int32),
            "boxes": np.array([b for r in good for b in r.boxes], np.int32).reshape(-1, 4),
            "labels": np.array([r.sample.label for r in good], np.int8),
            "image_size": np.array([r.image_size for r in good], np.int32).reshape(-1, 2),
        }
        sidecar = {
            "paths": [r.sample.display for r in good],
            "generators": [r.sample.generator for r in good],
            "errors": [{"path": r.sample.display, "reason": r.error} for r in records if r.error],
            "too_small": [{"path": r.sample.display, "image_size": list(r.image_size)} for r in records if r.too_small],
        }
        name = f"shard-{self.next_index:05d}"
        _atomic_write(self.out / f"{name}.safetensors", lambda p: save_file(tensors, str(p)))
        # ASCII JSON escapes a non-UTF-8 file name's lone surrogates, so it reads back byte-exact.
        text = json.dumps(sidecar, ensure_ascii=True) + "\n"
        _atomic_write(self.out / f"{name}.json", lambda p: p.write_text(text, encoding="utf-8"))
        self.next_index += 1
        self.done.update(r.sample.display for r in records)


def embed(
    detector: "Detector",
    inputs: ImageDataset | Iterable[Sample] | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    crops: int | None = None,
    split: str = "all",
    overwrite: bool = False,
    shard_size: int = 256,
    flush_s: float = 60.0,
    autocast: bool = False,
    progress: bool = True,
) -> dict:
    """Write the features of every image of ``inputs`` to the directory ``out`` (module docstring).

    ``inputs``: an :class:`~aigi.io.datasets.ImageDataset`, samples, or paths (files, folders, zips,
    CSV manifests; ``split`` keeps one public split). A shard is written every ``shard_size``
    images or ``flush_s`` seconds, whichever comes first, so a kill loses little. Unreadable
    files are reported on stderr, recorded with their reason, and skipped. Returns a summary."""
    from tqdm.auto import tqdm

    crops = crops or detector.preprocessing.crops
    writer = FeatureWriter(out, model_identity(detector), crops, overwrite)
    samples = [s for s in collect_samples(inputs, split) if s.display not in writer.done]
    counts = {"features": 0, "errors": 0, "too_small": 0}
    started = last = time.time()
    pending: list[Embedded] = []
    bar = tqdm(total=len(samples), unit="img", desc="embed", disable=not progress, dynamic_ncols=True)
    try:
        for rec in iter_embedded(detector, samples, batch_size, workers, crops, autocast):
            pending.append(rec)
            counts["errors" if rec.error else "too_small" if rec.too_small else "features"] += 1
            if rec.error:
                tqdm.write(f"aigi embed: skipped {rec.sample.display}: {rec.error}", file=sys.stderr)
            bar.update(1)
            if len(pending) >= shard_size or time.time() - last >= flush_s:
                writer.write(pending)
                pending.clear()
                last = time.time()
    finally:
        writer.write(pending)  # what was done before an interruption is kept
        bar.close()
    return {"out": str(writer.out), "n_images": len(writer.done), "n_new": len(samples), "n_already": writer.n_already,
            "n_features": counts["features"], "n_errors": counts["errors"], "n_too_small": counts["too_small"],
            "feature_dim": int(detector.encoder.feature_dim), "crops": crops, "seconds": round(time.time() - started, 2)}


# ----------------------------------------------------------------------------- reading


@dataclass
class Features:
    """Everything of a features directory, concatenated over its shards (rows in write order)."""

    manifest: dict
    paths: list[str]
    generators: list[str]
    labels: np.ndarray  # (n,) int8
    features: np.ndarray  # (n, D) float32, pooled
    crop_features: np.ndarray  # (m, D)
    crop_offsets: np.ndarray  # (n + 1,): image i's crops are rows crop_offsets[i]:crop_offsets[i + 1]
    boxes: np.ndarray  # (m, 4)
    image_size: np.ndarray  # (n, 2)
    errors: list[dict]
    too_small: list[dict]

    def __len__(self) -> int:
        return len(self.paths)

    def crops_of(self, i: int) -> np.ndarray:
        return self.crop_features[self.crop_offsets[i]:self.crop_offsets[i + 1]]


def load_features(path: str | os.PathLike) -> Features:
    """Read a directory written by :func:`embed`. Raises ValueError naming the file at fault."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not (path / MANIFEST).exists():
        raise ValueError(f"{path}: no {MANIFEST}; not a features directory written by aigi embed")
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path / MANIFEST}: format {manifest.get('format')!r} v{manifest.get('version')}, "
                         f"expected {FORMAT!r} v{FORMAT_VERSION}")
    dim = int(manifest["model"]["feature_dim"])
    parts: dict[str, list] = {k: [] for k in ("features", "crop_features", "n_crops", "boxes", "labels", "image_size")}
    paths, generators, errors, too_small = [], [], [], []
    shards = sorted((int(m.group(1)), f) for f in path.iterdir() if (m := SHARD_RE.match(f.name)))
    for _, side_path in shards:
        side = json.loads(side_path.read_text(encoding="utf-8"))
        tensors = load_file(str(side_path.with_suffix(".safetensors")))
        if len(tensors["features"]) != len(side["paths"]) or int(tensors["n_crops"].sum()) != len(tensors["crop_features"]):
            raise ValueError(f"{side_path}: the sidecar and its tensors disagree on the number of images or crops")
        for k in parts:
            parts[k].append(tensors[k])
        paths += side["paths"]
        generators += side["generators"]
        errors += side["errors"]
        too_small += side["too_small"]
    cat = {k: (np.concatenate(v) if v else None) for k, v in parts.items()}
    n_crops = cat["n_crops"] if cat["n_crops"] is not None else np.zeros(0, np.int32)
    return Features(
        manifest=manifest, paths=paths, generators=generators,
        labels=cat["labels"] if cat["labels"] is not None else np.zeros(0, np.int8),
        features=cat["features"] if cat["features"] is not None else np.zeros((0, dim), np.float32),
        crop_features=cat["crop_features"] if cat["crop_features"] is not None else np.zeros((0, dim), np.float32),
        crop_offsets=np.concatenate([[0], np.cumsum(n_crops)]).astype(np.int64),
        boxes=cat["boxes"] if cat["boxes"] is not None else np.zeros((0, 4), np.int32),
        image_size=cat["image_size"] if cat["image_size"] is not None else np.zeros((0, 2), np.int32),
        errors=errors, too_small=too_small,
    )
