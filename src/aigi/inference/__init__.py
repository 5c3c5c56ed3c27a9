"""Using a detector: batch scoring, result files, explanations, features, ONNX, Ray, batching.

:mod:`~aigi.inference.detect` scores many files with parallel decoding (``aigi detect``) and
:mod:`~aigi.inference.writers` writes their rows (CSV, JSON Lines, JSON; resumable);
:mod:`~aigi.inference.explain` draws heatmaps; :mod:`~aigi.inference.embed` writes encoder
features; :mod:`~aigi.inference.export` and :mod:`~aigi.inference.runtime` export to ONNX and run
it; :mod:`~aigi.inference.distributed` scores on a Ray cluster; :mod:`~aigi.inference.batcher`
gathers the images of concurrent requests into one forward pass. It stands on
:mod:`aigi.detector` and below.
"""
