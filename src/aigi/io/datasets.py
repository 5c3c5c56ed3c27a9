"""Labelled datasets: a folder or ``.zip`` laid out ``real/**`` and ``fake/<generator>/**``, or a
CSV manifest ``path,label[,generator]``, read as a list of :class:`~aigi.io.samples.Sample`.

Labels come from the layout (:func:`~aigi.io.samples.label_from_relpath`) or the manifest;
each sample keeps its path relative to its dataset root, which the public split rule hashes.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from .files import is_image_name, is_paired, walk_files, zip_members
from .samples import ARCHIVE_SEPARATOR, PARTS, REAL, Sample, check_split, label_from_relpath


@dataclass
class ImageDataset:
    """A labelled dataset: a list of samples plus where they came from."""

    source: str
    samples: list[Sample]
    split: str = "all"
    skipped: list[str] = field(default_factory=list)  # files outside real/ and fake/<gen>/

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def generators(self) -> list[str]:
        """Generator names seen among the fakes, sorted."""
        return sorted({s.generator for s in self.samples if s.label == 1})

    def summary(self) -> dict:
        counts = Counter(s.generator for s in self.samples)
        return {
            "source": self.source,
            "split": self.split,
            "n_images": len(self.samples),
            "n_real": sum(1 for s in self.samples if s.label == 0),
            "n_fake": sum(1 for s in self.samples if s.label == 1),
            "per_source": dict(sorted(counts.items())),
        }

    def subset(self, max_images: int | None, seed: int = 0) -> "ImageDataset":
        """A fixed random subset of at most ``max_images`` samples (same seed, same subset)."""
        if not max_images or max_images >= len(self.samples):
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(self.samples), size=max_images, replace=False))
        return ImageDataset(self.source, [self.samples[i] for i in keep], self.split, self.skipped)


def _parse_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("0", "real", "camera", "false"):
        return 0
    if v in ("1", "fake", "ai", "generated", "ai-generated", "true"):
        return 1
    raise ValueError(f"{where}: label {value!r} is not one of 0/1/real/fake")


def _read_manifest(csv_path: str) -> Iterator[Sample]:
    base = os.path.dirname(os.path.abspath(csv_path))
    paired: dict[str, bool] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: a manifest needs a header with columns path,label[,generator][,split]")
        for lineno, row in enumerate(reader, start=2):
            rel = (row["path"] or "").strip()
            label = _parse_label(row["label"] or "", f"{csv_path}:{lineno}")  # None: short row
            generator = (row.get("generator") or "").strip() or (REAL if label == 0 else "fake")
            fixed = (row.get("split") or "").strip().lower() or None
            if fixed is not None and fixed not in PARTS:
                raise ValueError(f"{csv_path}:{lineno}: split {fixed!r} is not one of {', '.join(PARTS)}")
            if ARCHIVE_SEPARATOR in rel:  # "dataset::member": a member of a zip or of a dataset folder
                root, member = rel.split(ARCHIVE_SEPARATOR, 1)
                root = root if os.path.isabs(root) else os.path.join(base, root)
                # The member's own path is what the split rule hashes, as if the dataset were read whole.
                if root not in paired:
                    paired[root] = is_paired(root)
                if os.path.isdir(root):
                    yield Sample(path=os.path.join(root, member), relpath=member, label=label, generator=generator,
                                 paired=paired[root], fixed_split=fixed)
                else:
                    yield Sample(path=member, relpath=member, label=label, generator=generator, archive=root,
                                 paired=paired[root], fixed_split=fixed)
                continue
            full = rel if os.path.isabs(rel) else os.path.join(base, rel)
            yield Sample(path=full, relpath=rel, label=label, generator=generator, fixed_split=fixed)


def load_dataset(source: str | os.PathLike, split: str = "all") -> ImageDataset:
    """Read a dataset: a folder or ``.zip`` laid out ``real/**`` and ``fake/<generator>/**``,
    or a CSV manifest ``path,label[,generator][,split]`` (a row's ``split``, when given, is its
    split whatever the hash rule says). Keeps only the samples of ``split``."""
    check_split(split)
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"dataset not found: {source}")
    skipped: list[str] = []
    samples: list[Sample] = []

    paired = is_paired(source)

    def keep(sample: Sample) -> None:
        if paired:
            sample = replace(sample, paired=True)
        if split == "all" or sample.split == split:
            samples.append(sample)

    if source.lower().endswith(".csv"):
        for s in _read_manifest(source):
            keep(s)
    elif zipfile.is_zipfile(source):
        for info in zip_members(source):
            labelled = label_from_relpath(info.filename)
            if labelled is None or not is_image_name(info.filename):
                skipped.append(info.filename)
                continue
            keep(Sample(info.filename, info.filename, labelled[0], labelled[1], archive=source))
    elif os.path.isdir(source):
        for full in walk_files(source):
            rel = os.path.relpath(full, source).replace(os.sep, "/")
            labelled = label_from_relpath(rel)
            if labelled is None or not is_image_name(rel):
                skipped.append(rel)
                continue
            keep(Sample(full, rel, labelled[0], labelled[1]))
    else:
        raise ValueError(f"{source}: a dataset is a folder, a .zip or a .csv manifest")
    if not samples and split == "all":
        raise ValueError(f"{source}: no images found under real/ or fake/<generator>/")
    return ImageDataset(source, samples, split, skipped)


def load_datasets(sources: str | os.PathLike | list[str | os.PathLike], split: str | list[str] = "all") -> ImageDataset:
    """One or several datasets as one (each keeps its own relative paths for the split rule);
    ``split`` is one for all, or a list with one per source."""
    if isinstance(sources, (str, os.PathLike)):
        return load_dataset(sources, split if isinstance(split, str) else split[0])
    splits = [split] * len(sources) if isinstance(split, str) else list(split)
    parts = [load_dataset(s, part) for s, part in zip(sources, splits)]
    split = split if isinstance(split, str) else "+".join(dict.fromkeys(splits))
    return ImageDataset(" + ".join(p.source for p in parts), [x for p in parts for x in p.samples], split,
                        [x for p in parts for x in p.skipped])


__all__ = ["ImageDataset", "load_dataset", "load_datasets"]
