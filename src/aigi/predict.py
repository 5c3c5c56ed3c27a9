"""Batched prediction over many files: parallel decoding, streaming, CSV/JSONL writers.

``detect(detector, paths)`` walks files, folders and zips lazily, decodes and preprocesses
in a pool of threads (Pillow releases the GIL while decoding and resizing), runs the model
on full batches, and yields one :class:`~aigi.model.Prediction` per input file, in input
order. Memory stays bounded: at most ``workers * batch_size * 2`` images are in flight.
"""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Iterable, Iterator

import numpy as np

from .data import ImageDecodeError, Sample, check_split, iter_inputs, read_image, split_of
from .model import Detector, Prediction

RESULT_FIELDS = ("path", "p_fake", "verdict", "generator", "p_generator", "error")


def _load(sample: Sample, preprocessing) -> np.ndarray | ImageDecodeError:
    try:
        return preprocessing(read_image(sample))
    except ImageDecodeError as e:
        return e
    except Exception as e:  # never let one file end a run
        return ImageDecodeError(sample.display, f"cannot process ({type(e).__name__}: {e})")


def iter_decoded(
    samples: Iterable[Sample], preprocessing, workers: int = 2, max_inflight: int = 256
) -> Iterator[tuple[Sample, np.ndarray | ImageDecodeError]]:
    """(sample, pixels or error) in input order, decoded by ``workers`` threads (0: inline)."""
    if workers <= 0:
        for s in samples:
            yield s, _load(s, preprocessing)
        return
    pending: deque[tuple[Sample, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aigi-decode") as pool:
        for s in samples:
            pending.append((s, pool.submit(_load, s, preprocessing)))
            if len(pending) >= max_inflight:
                done, fut = pending.popleft()
                yield done, fut.result()
        while pending:
            done, fut = pending.popleft()
            yield done, fut.result()


def score_samples(
    detector: Detector,
    samples: Iterable[Sample],
    batch_size: int = 32,
    workers: int = 2,
    autocast: bool = False,
) -> Iterator[tuple[Sample, Prediction]]:
    """(sample, prediction) for every sample, in order; unreadable files carry ``error``."""
    detector.eval()
    waiting: list[tuple[Sample, np.ndarray | ImageDecodeError]] = []

    def flush() -> Iterator[tuple[Sample, Prediction]]:
        arrays = [x for _, x in waiting if isinstance(x, np.ndarray)]
        if arrays:
            p_fake, probs = detector.score_batch(np.stack(arrays), autocast=autocast)
        k = 0
        for sample, x in waiting:
            if isinstance(x, np.ndarray):
                yield sample, detector.make_prediction(sample.display, p_fake[k], probs[k])
                k += 1
            else:
                yield sample, Prediction(sample.display, error=x.reason)
        waiting.clear()

    inflight = max(2 * batch_size, workers * batch_size * 2)
    n_ready = 0
    for sample, x in iter_decoded(samples, detector.preprocessing, workers, inflight):
        waiting.append((sample, x))
        n_ready += isinstance(x, np.ndarray)
        if n_ready >= batch_size:
            yield from flush()
            n_ready = 0
    yield from flush()


def detect(
    detector: Detector,
    paths: Iterable[str | os.PathLike],
    batch_size: int = 32,
    workers: int = 2,
    autocast: bool = False,
    split: str = "all",
) -> Iterator[Prediction]:
    """Score every image under ``paths`` (files, folders recursively, zips), streamed.

    ``split`` keeps only files of that public split (by their path relative to the input).
    """
    samples = iter_inputs(paths)
    if split != "all":
        samples = (s for s in samples if split_of(s.relpath) == check_split(split))
    for _, prediction in score_samples(detector, samples, batch_size, workers, autocast):
        yield prediction


# ----------------------------------------------------------------------------- writers


def result_row(p: Prediction) -> dict:
    """The flat row written for one file (see :data:`RESULT_FIELDS`)."""
    return {
        "path": p.path,
        "p_fake": None if p.p_fake is None else round(p.p_fake, 6),
        "verdict": p.verdict,
        "generator": p.generator,
        "p_generator": None if p.p_generator is None else round(p.p_generator, 6),
        "error": p.error,
    }


class ResultWriter:
    """Writes rows to ``.csv`` or ``.jsonl``, flushing after each batch of rows."""

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = os.fspath(path)
        self.format = "csv" if self.path.lower().endswith(".csv") else "jsonl"
        if not self.path.lower().endswith((".csv", ".jsonl", ".json")):
            raise ValueError(f"{self.path}: results are written as .csv or .jsonl")
        new = not (append and os.path.exists(self.path) and os.path.getsize(self.path) > 0)
        # surrogateescape keeps non-UTF-8 file names byte-exact instead of crashing the writer.
        self._file: IO[str] = open(self.path, "w" if new else "a", newline="", encoding="utf-8", errors="surrogateescape")
        self._csv = csv.DictWriter(self._file, fieldnames=RESULT_FIELDS) if self.format == "csv" else None
        if self._csv is not None and new:
            self._csv.writeheader()

    def write(self, predictions: Iterable[Prediction]) -> None:
        for p in predictions:
            row = result_row(p)
            if self._csv is not None:
                self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
            else:
                self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
