"""Making detectors: the training loop, what an epoch draws, probes, adaptation, calibration, DDP, data.

``aigi train`` is :func:`aigi.training.loop.train` on a :class:`~aigi.training.config.TrainConfig`:
:mod:`~aigi.training.trainset` (balanced draws, augmented crops, feature cache),
:mod:`~aigi.training.tuning` (what trains), :mod:`~aigi.training.probe` (``--tune probe``),
:mod:`~aigi.training.ddp` (torchrun), :mod:`~aigi.training.checkpoint` (resume) and
:mod:`~aigi.training.calibration` (temperature, threshold, open set, fitted on held-out data).
``aigi adapt`` / ``aigi memory``: :mod:`~aigi.training.adapt`, :mod:`~aigi.training.memory` and
:mod:`~aigi.training.heads`. ``aigi synth aligned`` makes training data: :mod:`~aigi.training.synth`.
It stands on :mod:`aigi.evaluation` (validation) and everything below it.
"""
