"""What a training epoch draws: balanced samples, augmented crops, and cached features.

**Balance.** A detector learns whatever separates its classes most cheaply; if one archive
holds most fakes and another most reals, that is "which archive". So each epoch draws
``epoch_images`` samples (with replacement) from probabilities set by :func:`draw_weights`:

- real and fake get equal shares within each *size band* (images at least as large as the
  crop, and smaller ones that the small-image rule upscales), and the small band gets
  ``small_share`` of all draws when both bands exist;
- within a class and band, each *source* (a generator folder, or the first folder under
  ``real/``, per dataset) gets a share proportional to ``count ** source_power``: 0.5
  (square-root balancing) lifts small sources without repeating a 2-image folder as often as
  a 2,000-image one; 1 is plain proportional sampling, 0 equal shares.

**Reproducibility.** Draw ``k`` of epoch ``e`` uses sample ``order[k]`` with the augmentation
seed ``(seed, e, k)``; the order comes from ``(seed, e)``. A resumed run draws exactly what
an uninterrupted one does.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..evaluation.metrics import compute_metrics
from ..io.augment import POLICIES
from ..io.datasets import ImageDataset
from ..io.files import read_bytes
from ..io.inputs import load_input
from ..io.samples import REAL, ImageDecodeError, Sample

if TYPE_CHECKING:
    from ..detector.model import Detector


def source_of(sample: Sample) -> str:
    """The source a sample is balanced by: ``<dataset>:<generator>`` for fakes,
    ``<dataset>:real/<first folder>`` for reals (``real`` alone when the file lies directly in real/)."""
    root = sample.archive or sample.path[: len(sample.path) - len(sample.relpath)]
    dataset = os.path.basename(os.path.normpath(root)) if root else ""
    if sample.label == 1:
        return f"{dataset}:{sample.generator}"
    parts = sample.relpath.split("/")
    return f"{dataset}:{REAL}/{parts[1]}" if len(parts) > 2 else f"{dataset}:{REAL}"


def image_side(sample: Sample) -> int:
    """The shorter side of a sample's image, from its header (0 when unreadable: the
    training loop reports the file when it draws it)."""
    import io

    try:
        with Image.open(io.BytesIO(read_bytes(sample))) as im:
            return min(im.size)
    except (ImageDecodeError, OSError, ValueError, Image.DecompressionBombError):
        return 0


def draw_weights(samples: list[Sample], small: np.ndarray, small_share: float = 0.2,
                 source_power: float = 0.5) -> np.ndarray:
    """Per-sample draw probabilities (sum 1), by the rule of the module docstring.
    ``small``: which samples are smaller than the crop."""
    labels = np.array([s.label for s in samples])
    sources = np.array([source_of(s) for s in samples], dtype=object)
    small = np.asarray(small, dtype=bool)
    weights = np.zeros(len(samples))
    bands = [b for b in (False, True) if (small == b).any()]
    for band in bands:
        band_share = 1.0 if len(bands) == 1 else (small_share if band else 1.0 - small_share)
        classes = [c for c in (0, 1) if ((small == band) & (labels == c)).any()]
        for c in classes:
            in_class = (small == band) & (labels == c)
            counts = Counter(sources[in_class])
            total = sum(n ** source_power for n in counts.values())
            for src, n in counts.items():
                members = in_class & (sources == src)
                weights[members] = band_share / len(classes) * (n ** source_power / total) / n
    return weights / weights.sum()


def draw_order(weights: np.ndarray, n_draws: int, seed: int, epoch: int) -> np.ndarray:
    """The samples an epoch draws, in order (fixed by ``seed`` and ``epoch``)."""
    return np.random.default_rng([seed, epoch, 7]).choice(len(weights), size=n_draws, replace=True, p=weights)


class TrainingImages(torch.utils.data.Dataset):
    """(sample index, epoch, draw) -> one augmented crop, its binary label and source index.

    ``fixed``: no augmentation and the model's single centre crop (the feature cache)."""

    def __init__(self, dataset: ImageDataset, detector: "Detector", augment: str, seed: int, fixed: bool = False) -> None:
        self.samples = dataset.samples
        self.source_index = {label: i for i, label in enumerate(detector.labels)}
        self.preprocessing = detector.preprocessing
        self.augment = augment
        self.seed = seed
        self.fixed = fixed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int, int]):
        i, epoch, draw = (key, 0, key) if isinstance(key, int) else key
        sample = self.samples[i]
        try:
            if self.fixed:
                x = load_input(sample, self.preprocessing, crops=1)
            else:
                x = load_input(sample, self.preprocessing, augment=self.augment,
                               rng=np.random.default_rng([self.seed, epoch, draw]))
            if x.too_small:
                raise ImageDecodeError(sample.display, f"too small to train on ({x.image_size[0]}x{x.image_size[1]} px, "
                                                       f"under {self.preprocessing.min_side} px)")
        except ImageDecodeError as e:
            return {"error": e.reason, "path": sample.display}
        return {"pixels": torch.from_numpy(x.pixels[0]), "label": float(sample.label),
                "source": self.source_index.get(sample.generator, 0), "index": i,
                "policy": POLICIES.index(x.policy) if x.policy else -1}


def collate(items: list[dict]) -> dict:
    good = [x for x in items if "pixels" in x]
    batch = {"errors": [(x["path"], x["error"]) for x in items if "error" in x]}
    if good:
        batch["pixels"] = torch.stack([x["pixels"] for x in good])
        batch["label"] = torch.tensor([x["label"] for x in good])
        batch["source"] = torch.tensor([x["source"] for x in good])
        batch["index"] = torch.tensor([x["index"] for x in good])
        batch["policy"] = torch.tensor([x["policy"] for x in good])
    return batch


def global_batches(n_draws: int, start_draw: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Draw positions of each batch from ``start_draw`` on (a resumed epoch skips what it did);
    with ``world`` processes, rank r's share of each batch is positions r, r + world, ... (aigi.training.ddp)."""
    return [list(range(s, min(s + batch_size, n_draws)))[rank::world] for s in range(start_draw, n_draws, batch_size)]


def make_loader(images: TrainingImages, order: np.ndarray, epoch: int, start_draw: int, batch_size: int,
                workers: int, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """Batches of the epoch's draws (this rank's share of each, :func:`global_batches`)."""
    batches = [[(int(order[k]), epoch, k) for k in b] for b in global_batches(len(order), start_draw, batch_size, rank, world)]
    return torch.utils.data.DataLoader(
        images, batch_sampler=batches, collate_fn=collate,
        num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None,
    )


class FeatureCache:
    """Frozen-encoder features of each image's centre crop, computed once. With ``--tune
    linear`` and ``--augment none`` the encoder would see the same pixels every epoch, so each
    epoch then costs only the heads (the UnivFD recipe, at a fraction of the CPU time)."""

    def __init__(self, detector: "Detector", dataset: ImageDataset, batch_size: int, workers: int, autocast: bool,
                 desc: str, progress: bool = True) -> None:
        images = TrainingImages(dataset, detector, "none", 0, fixed=True)
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, sampler=range(len(images)),
                                             collate_fn=collate, num_workers=workers)
        device = next(detector.parameters()).device
        self.generators = np.array([s.generator for s in dataset.samples])
        self.row = np.full(len(images), -1)  # dataset index -> feature row (-1: unreadable)
        chunks, labels, sources, self.errors = [], [], [], []
        detector.eval()
        with torch.inference_mode(), tqdm(total=len(images), unit="img", desc=desc, disable=not progress) as bar:
            for start, batch in zip(range(0, len(images), batch_size), loader):
                self.errors += batch["errors"]
                bad = {p for p, _ in batch["errors"]}
                ok = [i for i in range(start, min(start + batch_size, len(images))) if dataset.samples[i].display not in bad]
                if ok:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        chunks.append(detector.encoder(batch["pixels"].to(device)).float().cpu())
                    labels.append(batch["label"])
                    sources.append(batch["source"])
                    self.row[ok] = np.arange(sum(len(c) for c in chunks) - len(ok), sum(len(c) for c in chunks))
                bar.update(len(batch.get("label", [])) + len(batch["errors"]))
        self.features = torch.cat(chunks) if chunks else torch.empty(0)
        self.labels = torch.cat(labels) if labels else torch.empty(0)
        self.sources = torch.cat(sources) if sources else torch.empty(0, dtype=torch.long)

    def batches(self, order: np.ndarray, start_draw: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
        """The epoch's draws as batches of cached features, as :func:`make_loader` splits them."""
        for positions in global_batches(len(order), start_draw, batch_size, rank, world):
            rows = [r for r in self.row[order[positions]] if r >= 0]
            if rows:
                yield {"errors": [], "features": self.features[rows], "label": self.labels[rows], "source": self.sources[rows]}
            else:
                yield {"errors": []}

    @torch.inference_mode()
    def metrics(self, detector: "Detector") -> dict:
        kept = self.row >= 0
        out = detector.heads(self.features.to(next(detector.parameters()).device))
        p_fake = torch.sigmoid(out.binary_logits.float() / detector.temperature).double().cpu().numpy()
        probs = torch.softmax(out.source_logits.float(), -1).double().cpu().numpy()
        return compute_metrics(self.labels.numpy().astype(int), p_fake, self.generators[kept],
                               probs, detector.labels, detector.threshold, n_errors=len(self.errors))
