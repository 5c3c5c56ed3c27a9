"""Samples: one image file, where its bytes are, what is known about it, and the public split rule.

The rule is fixed and public: a file's split is the sha1 of its path relative to the dataset
root, mod 10 (0 test, 1 val, else train), so anyone can reproduce it. A *paired* dataset
(aligned fakes beside their real photo, :mod:`aigi.training.synth`) hashes the pair's key
instead, so a real image and its fakes always share a split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PARTS = ("train", "val", "test")  # the splits an image can be in
SPLITS = (*PARTS, "all")  # what a verb can be asked to score
REAL = "real"
PAIRED_MARKER = "aigi-dataset.json"  # a dataset root file; {"paired": true} keeps pairs in one split
ARCHIVE_SEPARATOR = "::"  # "archive.zip::member": how results and manifests name a zip member


class ImageDecodeError(Exception):
    """A file that cannot be turned into an image; ``path`` and ``reason`` are kept apart."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable (process pools, Ray): rebuild from (path, reason)
        return (type(self), (self.path, self.reason))


# ----------------------------------------------------------------------------- split rule


def split_of(relpath: str) -> str:
    """The public, fixed split of a file: sha1 of its relative path, mod 10 (0 test, 1 val).
    For a paired dataset pass the pair key (:func:`pair_key`) instead of the path."""
    h = int(hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest(), 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def pair_key(relpath: str) -> str:
    """What a real image and its aligned fakes share: the path of the real one
    (``real/a/x.jpg`` and ``fake/taesd/a/x.jpg`` -> ``real/a/x.jpg``). So a pair lands in the split
    its real photo has in the dataset it came from, when the layout below ``real/`` is kept."""
    parts = relpath.split("/")
    top = parts[0].lower()
    if top == "fake" and len(parts) >= 3:
        return "/".join(["real", *parts[2:]])
    return relpath


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One image file: where its bytes are, and what we know about it.

    ``path`` is a filesystem path, or a member name when ``archive`` (a zip file) is set.
    ``relpath`` is the path relative to the dataset root; the split rule hashes it.
    ``label`` is 0 for real, 1 for AI-generated, -1 when unknown (files given to ``detect``).
    ``paired``: the sample belongs to a paired dataset, whose split rule hashes :func:`pair_key`.
    ``fixed_split``: a split the dataset names for it (a manifest's ``split`` column, as the
    cross-source yardstick writes: whole sources held out), which the hash rule then never overrides.
    """

    path: str
    relpath: str = ""
    label: int = -1
    generator: str = ""
    archive: str | None = None
    paired: bool = False
    fixed_split: str | None = None

    @property
    def split(self) -> str:
        """This sample's split: the one its dataset fixed, else the public rule (see :func:`split_of`;
        paired datasets keep pairs together)."""
        if self.fixed_split:
            return self.fixed_split
        return split_of(pair_key(self.relpath) if self.paired else self.relpath)

    @property
    def display(self) -> str:
        """The name shown to users and written to result files."""
        return f"{self.archive}{ARCHIVE_SEPARATOR}{self.path}" if self.archive else self.path


def label_from_relpath(relpath: str) -> tuple[int, str] | None:
    """``real/**`` -> (0, "real"); ``fake/<generator>/**`` -> (1, generator); else None."""
    parts = relpath.split("/")
    top = parts[0].lower()
    if top == "real" and len(parts) >= 2:
        return 0, REAL
    if top == "fake" and len(parts) >= 3:
        return 1, parts[1]
    if top == "fake" and len(parts) == 2:
        return 1, "fake"  # fakes without a generator folder: detection only
    return None


__all__ = ["ARCHIVE_SEPARATOR", "PAIRED_MARKER", "PARTS", "REAL", "SPLITS", "ImageDecodeError", "Sample", "check_split",
           "label_from_relpath", "pair_key", "split_of"]
