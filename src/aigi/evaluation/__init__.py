"""Measuring a detector: metrics with their counts and intervals, calibration choices, and reports.

:func:`aigi.evaluation.evaluate.evaluate` scores a labelled dataset (through
:mod:`aigi.inference`), :mod:`~aigi.evaluation.metrics` measures the scores,
:mod:`~aigi.evaluation.calibration_maps` compares calibration maps on held-out scores, and
:mod:`~aigi.evaluation.report` writes ``metrics.json``, the figures (:mod:`~aigi.evaluation.plots`),
the predictions and ``report.md``.
"""
