"""The record of a model's training data: what :mod:`aigi.training.adapt` replays so it does not forget.

``memory.safetensors`` beside a model's weights holds the pooled features of a class- and
source-balanced sample of its training images (the fit part) and of its validation images
(the held-out part), float16, at most ``max_mb`` (4 MB: ~1,600 images at Lite0's 1,280-d,
~2,700 at CLIP's 768-d); why a sample and not per-class statistics is in
:mod:`aigi.training.adapt` (step 2). ``aigi train --memory-mb 4`` writes it at the end of
training (:func:`build_memory`), ``aigi memory MODEL DATA`` for a model that has none
(:func:`save_memory_for`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .. import __version__
from ..inference.embed import encoder_digest, iter_embedded
from ..io.datasets import load_datasets
from ..io.decode import DECODE_WORKERS
from ..io.samples import REAL, Sample
from .trainset import source_of

if TYPE_CHECKING:
    from ..detector.model import Detector

MEMORY_NAME = "memory.safetensors"
MEMORY_FORMAT = "aigi-memory"
DEFAULT_MEMORY_MB = 4.0


@dataclass
class Memory:
    """Pooled features of a balanced sample of a model's training (fit) and validation
    (held-out) images, and what each is: label, source (head label) and balance group."""

    features: np.ndarray  # (n, D) float32 (stored float16)
    labels: np.ndarray  # (n,) 0 real / 1 fake
    sources: list[str]  # "real" or the generator (the source head's label)
    groups: list[str]  # balance group: dataset and generator, or dataset and real sub-folder
    held_out: np.ndarray  # (n,) bool: validation images, used to calibrate, never fitted
    encoder_sha256: str
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str | os.PathLike) -> Path:
        """Write safetensors (tensors + JSON metadata), atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        source_names, group_names = sorted(set(self.sources)), sorted(set(self.groups))
        tensors = {
            "features": self.features.astype(np.float16),
            "labels": self.labels.astype(np.int8),
            "source": np.array([source_names.index(s) for s in self.sources], np.int16),
            "group": np.array([group_names.index(g) for g in self.groups], np.int16),
            "held_out": self.held_out.astype(np.uint8),
        }
        meta = {"format": MEMORY_FORMAT, "version": "1", "aigi_version": __version__,
                "encoder_sha256": self.encoder_sha256, "source_names": json.dumps(source_names),
                "group_names": json.dumps(group_names), "info": json.dumps(self.info)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Memory":
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # a truncated or foreign file: say which and why
            raise ValueError(f"{path}: not a readable record of training features ({type(e).__name__}: {e})") from None
        if meta.get("format") != MEMORY_FORMAT:
            raise ValueError(f"{path}: not an aigi record of training features (format {meta.get('format')!r})")
        source_names, group_names = json.loads(meta["source_names"]), json.loads(meta["group_names"])
        return cls(
            features=tensors["features"].astype(np.float32), labels=tensors["labels"].astype(np.int64),
            sources=[source_names[i] for i in tensors["source"]], groups=[group_names[i] for i in tensors["group"]],
            held_out=tensors["held_out"].astype(bool), encoder_sha256=meta["encoder_sha256"],
            info=json.loads(meta.get("info", "{}")))

    def take(self, rows: np.ndarray) -> "Memory":
        rows = np.asarray(rows, dtype=np.int64)
        return Memory(self.features[rows], self.labels[rows], [self.sources[i] for i in rows],
                      [self.groups[i] for i in rows], self.held_out[rows], self.encoder_sha256, dict(self.info))

    @staticmethod
    def concat(parts: Sequence["Memory"]) -> "Memory":
        return Memory(np.concatenate([m.features for m in parts]), np.concatenate([m.labels for m in parts]),
                      [s for m in parts for s in m.sources], [g for m in parts for g in m.groups],
                      np.concatenate([m.held_out for m in parts]), parts[0].encoder_sha256, dict(parts[0].info))

    def summary(self) -> dict:
        fit, held = ~self.held_out, self.held_out
        return {"n_fit": int(fit.sum()), "n_held_out": int(held.sum()),
                "n_real": int((self.labels == 0).sum()), "n_fake": int((self.labels == 1).sum()),
                "per_source": dict(sorted(Counter(self.sources).items())), "bytes": int(self.features.size * 2)}


def budget_rows(feature_dim: int, max_mb: float) -> int:
    """Rows that fit in ``max_mb``: float16 features plus 6 bytes of label, source, group and split."""
    return max(2, int(max_mb * 2**20) // (2 * feature_dim + 6))


def _water_fill(available: Mapping[str, int], budget: int) -> dict[str, int]:
    """Equal quotas per group, a group's unused share passed on to the others."""
    quota = {g: 0 for g in available}
    left = budget
    open_groups = sorted(g for g, n in available.items() if n > 0)
    while left > 0 and open_groups:
        share = max(1, left // len(open_groups))
        for g in list(open_groups):
            take = min(share, available[g] - quota[g], left)
            quota[g] += take
            left -= take
            if quota[g] >= available[g]:
                open_groups.remove(g)
            if left == 0:
                break
    return quota


def balanced_pick(labels: Sequence[int], groups: Sequence[str], n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` row indices: half real, half fake (all to one class when the other is absent),
    and within a class equal shares per group (:func:`_water_fill`), drawn at random (``seed``)."""
    labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
    rng = np.random.default_rng(seed)
    classes = [c for c in (0, 1) if (labels == c).any()]
    chosen: list[np.ndarray] = []
    left = n
    for k, c in enumerate(classes):
        budget = left // (len(classes) - k)  # the first class may leave some of its half to the second
        rows = np.flatnonzero(labels == c)
        by_group = {g: rows[groups[rows] == g] for g in sorted(set(groups[rows]))}
        quota = _water_fill({g: len(r) for g, r in by_group.items()}, budget)
        for g, r in by_group.items():
            if quota[g]:
                chosen.append(np.sort(rng.choice(r, size=quota[g], replace=False)))
        left -= sum(quota.values())
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def trim_memory(memory: Memory, max_mb: float, seed: int = 0, val_share: float = 0.25) -> Memory:
    """``memory`` within ``max_mb``: a balanced pick (:func:`balanced_pick`) of each part, the
    held-out part taking up to ``val_share`` of the rows."""
    rows = budget_rows(memory.features.shape[1], max_mb)
    if len(memory) <= rows:
        return memory
    held_rows, fit_rows = np.flatnonzero(memory.held_out), np.flatnonzero(~memory.held_out)
    n_held = min(len(held_rows), int(round(rows * val_share)))
    keep = []
    for idx, n in ((fit_rows, rows - n_held), (held_rows, n_held)):
        if len(idx) and n:
            keep.append(idx[balanced_pick(memory.labels[idx], [memory.groups[i] for i in idx], n, seed)])
    return memory.take(np.sort(np.concatenate(keep)))


def embed_rows(detector: "Detector", samples: Sequence[Sample], batch_size: int, workers: int,
                progress: bool, desc: str) -> tuple[list[Sample], np.ndarray, list[tuple[str, str]]]:
    """(samples with features, their pooled features, (path, reason) of those without)."""
    from tqdm.auto import tqdm

    kept, rows, problems = [], [], []
    with tqdm(total=len(samples), unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for rec in iter_embedded(detector, samples, batch_size, workers):
            bar.update(1)
            if rec.features is None:
                problems.append((rec.sample.display, rec.error or "too small to judge"))
                continue
            kept.append(rec.sample)
            rows.append(rec.features)
    dim = int(detector.encoder.feature_dim)
    return kept, (np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)), problems


def build_memory(detector: "Detector", train_samples: Sequence[Sample], val_samples: Sequence[Sample] = (),
                 max_mb: float = DEFAULT_MEMORY_MB, val_share: float = 0.25, seed: int = 0, batch_size: int = 32,
                 workers: int = DECODE_WORKERS, progress: bool = True, how: str = "") -> Memory:
    """The record of :func:`aigi.training.adapt.adapt` for ``detector``: a balanced sample (:func:`balanced_pick`) of
    labelled ``train_samples`` (fit part) and ``val_samples`` (held-out part), embedded."""
    rows = budget_rows(int(detector.encoder.feature_dim), max_mb)
    labelled = lambda xs: [s for s in xs if s.label in (0, 1)]  # noqa: E731
    train_samples, val_samples = labelled(train_samples), labelled(val_samples)
    n_val = min(len(val_samples), int(round(rows * val_share)))  # what the held-out part leaves goes to the fit part
    parts = []
    for samples, n, held in ((train_samples, rows - n_val, False), (val_samples, n_val, True)):
        if not samples or not n:
            continue
        pick = balanced_pick([s.label for s in samples], [source_of(s) for s in samples], n, seed)
        kept, feats, problems = embed_rows(detector, [samples[i] for i in pick], batch_size, workers, progress,
                                            "record: validation features" if held else "record: training features")
        for path, reason in problems:
            print(f"aigi: record: skipped {path}: {reason}", file=sys.stderr)
        parts.append(Memory(feats, np.array([s.label for s in kept], np.int64),
                            [REAL if s.label == 0 else s.generator for s in kept], [source_of(s) for s in kept],
                            np.full(len(kept), held), encoder_digest(detector)))
    if not parts or not sum(len(p) for p in parts):
        raise ValueError("no labelled image could be embedded for the record (give images laid out real/** and "
                         "fake/<generator>/**, or a CSV manifest)")
    memory = Memory.concat(parts)
    memory.info = {"made": time.strftime("%Y-%m-%d"), "how": how, "max_mb": max_mb, "seed": seed,
                   "n_train_available": len(train_samples), "n_val_available": len(val_samples)}
    return memory


def save_memory_for(detector: "Detector", data: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                    split: str = "train", max_mb: float = DEFAULT_MEMORY_MB, seed: int = 0, batch_size: int = 32,
                    workers: int = DECODE_WORKERS, progress: bool = True) -> Path:
    """Make the record of a trained model from the data it was trained on (``split`` for the fit
    part, the public ``val`` split held out) and write it to ``out``. ``aigi memory`` calls this."""
    data = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    train_set, val_set = load_datasets(data, split), load_datasets(data, "val")
    if split == "all":
        train_set.samples = [s for s in train_set.samples if s.split != "val"]
    memory = build_memory(detector, train_set.samples, val_set.samples, max_mb, seed=seed, batch_size=batch_size,
                          workers=workers, progress=progress, how=f"from {' + '.join(map(str, data))} ({split} / val)")
    return memory.save(out)


__all__ = ["DEFAULT_MEMORY_MB", "MEMORY_FORMAT", "MEMORY_NAME", "Memory", "balanced_pick", "budget_rows", "build_memory",
           "embed_rows", "save_memory_for", "trim_memory"]
