"""Batched prediction over many files: parallel decoding and streaming (``aigi detect``).

``detect(detector, paths)`` walks files, folders and zips lazily, decodes and crops
(:func:`aigi.forensics.evidence.load_with_evidence`: the one input path, and the file's
evidence from the same bytes) in a pool of threads (Pillow releases the GIL while decoding),
runs the model on full batches of crops, and yields one :class:`~aigi.detector.scoring.Prediction`
per input file, in input order. Memory stays bounded: at most ``workers * batch_size * 2``
images are in flight. Result files are written by :mod:`aigi.inference.writers`.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Container, Iterable, Iterator, Sequence

from ..detector.scoring import Prediction
from ..forensics.evidence import load_with_evidence
from ..io.decode import DECODE_WORKERS
from ..io.files import iter_inputs
from ..io.inputs import ModelInput
from ..io.samples import ImageDecodeError, Sample, check_split


def _load(sample: Sample, preprocessing, crops: int | None = None, evidence: bool = True) -> ModelInput | ImageDecodeError:
    try:
        return load_with_evidence(sample, preprocessing, crops=crops, evidence=evidence)
    except ImageDecodeError as e:
        return e
    except Exception as e:  # never let one file end a run
        return ImageDecodeError(sample.display, f"cannot process ({type(e).__name__}: {e})")


def iter_decoded(
    samples: Iterable[Sample], preprocessing, workers: int = DECODE_WORKERS, max_inflight: int = 256,
    crops: int | None = None, evidence: bool = True,
) -> Iterator[tuple[Sample, ModelInput | ImageDecodeError]]:
    """(sample, model input or error) in input order, decoded by ``workers`` threads (0: inline);
    with ``evidence``, each file's metadata is read from the same bytes."""
    if workers <= 0:
        for s in samples:
            yield s, _load(s, preprocessing, crops, evidence)
        return
    pending: deque[tuple[Sample, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aigi-decode") as pool:
        for s in samples:
            pending.append((s, pool.submit(_load, s, preprocessing, crops, evidence)))
            if len(pending) >= max_inflight:
                done, fut = pending.popleft()
                yield done, fut.result()
        while pending:
            done, fut = pending.popleft()
            yield done, fut.result()


def score_samples(
    detector,
    samples: Iterable[Sample],
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    autocast: bool = False,
    crops: int | None = None,
    evidence: bool = True,
) -> Iterator[tuple[Sample, Prediction]]:
    """(sample, prediction) for every sample, in order; unreadable files carry ``error``.
    ``batch_size`` counts crops per forward pass; ``crops``: crops per image in all (shared between
    the model's scales; default the model's own at each scale);
    ``evidence=False`` skips reading the files' metadata (the pixel verdict is then final)."""
    detector.eval()
    inflight = max(2 * batch_size, workers * batch_size * 2)
    decoded = iter_decoded(samples, detector.preprocessing, workers, inflight, crops, evidence)
    for group in crop_batches(decoded, batch_size):
        inputs = [x for _, x in group if isinstance(x, ModelInput)]
        scores = iter(detector.score_inputs(inputs, batch_size, autocast))
        for sample, x in group:
            if isinstance(x, ModelInput):
                yield sample, detector.make_prediction(x, next(scores))
            else:
                yield sample, Prediction(sample.display, error=x.reason)


def crop_batches(decoded: Iterable[tuple[Sample, ModelInput | ImageDecodeError]],
                 batch_size: int) -> Iterator[list[tuple[Sample, ModelInput | ImageDecodeError]]]:
    """Decoded inputs in groups of at least ``batch_size`` crops (the last may hold fewer), in order:
    what one round of forward passes takes."""
    group: list[tuple[Sample, ModelInput | ImageDecodeError]] = []
    n_crops = 0
    for sample, x in decoded:
        group.append((sample, x))
        n_crops += x.n_crops if isinstance(x, ModelInput) else 0
        if n_crops >= batch_size:
            yield group
            group, n_crops = [], 0
    if group:
        yield group


def detect(
    detector,
    paths: Iterable[str | os.PathLike],
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    autocast: bool = False,
    split: str = "all",
    skip: Container[str] = frozenset(),
    crops: int | None = None,
    evidence: bool = True,
) -> Iterator[Prediction]:
    """Score every image under ``paths`` (files, folders recursively, zips), streamed.

    ``split`` keeps only files of that public split (by their path relative to the input); a
    list gives each path its own split (see :func:`aigi.io.splits.resolve_splits`). Files whose
    display path is in ``skip`` (already scored) are passed over, and a file reached twice (a
    folder and a file inside it) is scored once. A path that does not exist is never dropped:
    it yields a prediction with ``error`` in its place, as an unreadable file does.
    """
    samples = select_inputs(paths, split, skip)
    for _, prediction in score_samples(detector, samples, batch_size, workers, autocast, crops, evidence):
        yield prediction


def select_inputs(
    paths: Iterable[str | os.PathLike], split: str | Sequence[str] = "all", skip: Container[str] = frozenset()
) -> Iterator[Sample]:
    """The files :func:`detect` scores, streamed: those of ``split`` (one for all paths, or one
    per path), not in ``skip``, each once."""
    paths = list(paths)
    splits = [split] * len(paths) if isinstance(split, str) else list(split)
    if len(splits) != len(paths):
        raise ValueError(f"{len(splits)} splits for {len(paths)} paths")
    seen: set[str] = set()
    for path, part in zip(paths, splits):
        check_split(part)
        # A named path that is not there has no split to be left out by: it always gets its error row.
        named_missing = not os.path.lexists(path)
        for s in iter_inputs([path]):
            if s.display in skip or s.display in seen or (part != "all" and s.split != part and not named_missing):
                continue
            seen.add(s.display)
            yield s


__all__ = ["crop_batches", "detect", "iter_decoded", "score_samples", "select_inputs"]
