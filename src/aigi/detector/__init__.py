"""The detector: an encoder with two linear heads, and the rules that turn its outputs into verdicts.

:class:`~aigi.detector.model.Detector` (torch; loading and saving model directories),
:mod:`~aigi.detector.scoring` (crop logits averaged, temperature, threshold, uncertain band,
the file's evidence, generator or ``unknown``: the same for every runtime), the thresholds a
loaded model can move (:mod:`~aigi.detector.thresholds`), registered model names
(:mod:`~aigi.detector.registry`) and published detectors (:mod:`~aigi.detector.published`).
It stands on :mod:`aigi.io`, :mod:`aigi.encoders` and :mod:`aigi.forensics`.
"""
