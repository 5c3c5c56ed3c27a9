"""Evaluation on a labelled dataset: score every sample and measure the scores.

``evaluate(detector, dataset)`` scores every sample (reusing the streaming, parallel decoding
of :func:`aigi.inference.detect.score_samples`) and measures them with
:func:`aigi.evaluation.metrics.compute_metrics`; :func:`aigi.evaluation.report.write_report`
writes the result as files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..inference.detect import score_samples
from ..io.datasets import ImageDataset
from ..io.decode import DECODE_WORKERS
from ..io.samples import REAL, Sample
from .metrics import abstention, clean, compute_metrics

if TYPE_CHECKING:  # keep `import aigi.evaluation.evaluate` cheap: torch comes in with the model only when used
    from ..detector.model import Detector
    from ..detector.scoring import Prediction

MAX_ERRORS_LISTED = 100


def evaluate(
    detector: "Detector",
    samples_or_dataset: ImageDataset | Iterable[Sample],
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    autocast: bool = False,
    progress: bool = True,
    crops: int | None = None,
    evidence: bool = False,
) -> tuple[dict, list["Prediction"]]:
    """Score a labelled dataset and compute its metrics (of the pixel model: ``evidence``, off by
    default, only fills the predictions' evidence and final verdicts).

    Returns ``(metrics, predictions)``: the dict of :func:`compute_metrics` plus ``errors``
    (the first 100 unreadable files, ``{"path", "reason"}``) and ``model_threshold``, and one
    :class:`~aigi.detector.scoring.Prediction` per sample in input order. Only samples labelled 0/1 count
    towards the metrics; unlabelled ones are scored and returned but not measured.
    """
    from tqdm.auto import tqdm

    source = samples_or_dataset.source if isinstance(samples_or_dataset, ImageDataset) else None
    samples = list(samples_or_dataset.samples if isinstance(samples_or_dataset, ImageDataset) else samples_or_dataset)
    n_labelled = sum(1 for s in samples if s.label in (0, 1))
    if not n_labelled:
        # Fail before scoring: there is nothing to measure against.
        raise ValueError(
            f"none of the {len(samples)} images has a label: evaluation needs a dataset laid out "
            "real/** and fake/<generator>/**, or a CSV manifest with path,label[,generator]"
        )

    label_names = list(detector.labels)
    labels: list[int] = []
    p_fake: list[float] = []
    generators: list[str] = []
    source_probs: list[list[float]] = []
    predictions: list[Prediction] = []
    errors: list[dict] = []
    n_errors = 0  # labelled images that could not be read
    n_error_total = 0

    bar = tqdm(total=len(samples), unit="img", desc="evaluating", disable=not progress, dynamic_ncols=True)
    try:
        for sample, pred in score_samples(detector, samples, batch_size, workers, autocast, crops, evidence):
            predictions.append(pred)
            bar.update(1)
            if pred.error or pred.p_fake is None:
                n_error_total += 1
                n_errors += sample.label in (0, 1)
                if len(errors) < MAX_ERRORS_LISTED:
                    errors.append({"path": pred.path, "reason": pred.error or pred.note or "not scored"})
                continue
            if sample.label not in (0, 1):
                continue
            labels.append(int(sample.label))
            p_fake.append(float(pred.p_fake))
            generators.append(sample.generator or (REAL if sample.label == 0 else "fake"))
            source_probs.append([pred.generator_probs.get(name, 0.0) for name in label_names])
            if n_error_total:
                bar.set_postfix(unreadable=n_error_total, refresh=False)
    finally:
        bar.close()

    metrics = compute_metrics(
        np.asarray(labels, dtype=np.int64),
        np.asarray(p_fake, dtype=np.float64),
        np.asarray(generators, dtype=object),
        np.asarray(source_probs, dtype=np.float64).reshape(len(labels), len(label_names)),
        label_names,
        detector.threshold,
        n_errors=n_errors,
    )
    metrics["model_threshold"] = detector.threshold
    metrics["uncertain"] = abstention(np.asarray(labels), np.asarray(p_fake), detector.threshold,
                                      getattr(detector, "operating_point", None) and detector.operating_point.band)
    metrics["n_unlabelled"] = len(samples) - n_labelled
    metrics["n_errors_total"] = n_error_total  # unlabelled unreadable files included
    if source is not None:
        metrics["dataset"] = source
    metrics["errors"] = errors
    return clean(metrics), predictions


__all__ = ["MAX_ERRORS_LISTED", "evaluate"]
