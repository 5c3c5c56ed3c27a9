"""Balanced draws: classes even per size band, sources by the square-root rule, reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from aigi.io.samples import Sample
from aigi.training.trainset import draw_order, draw_weights, source_of


def _samples() -> list[Sample]:
    out = []
    out += [Sample(f"real/big/{i}.jpg", f"real/big/{i}.jpg", 0, "real", archive="a.zip") for i in range(90)]
    out += [Sample(f"real/small/{i}.jpg", f"real/small/{i}.jpg", 0, "real", archive="a.zip") for i in range(10)]
    out += [Sample(f"fake/g1/{i}.png", f"fake/g1/{i}.png", 1, "g1", archive="b.zip") for i in range(100)]
    out += [Sample(f"fake/g2/{i}.png", f"fake/g2/{i}.png", 1, "g2", archive="b.zip") for i in range(4)]
    return out


def test_source_of_names_dataset_and_folder():
    s = _samples()
    assert source_of(s[0]) == "a.zip:real/big" and source_of(s[100]) == "b.zip:g1"
    assert source_of(Sample("/d/ds/real/x.jpg", "real/x.jpg", 0, "real")) == "ds:real"


def test_draw_weights_balance_classes_and_sources():
    samples = _samples()
    w = draw_weights(samples, np.zeros(len(samples), bool), source_power=0.5)
    assert w.sum() == pytest.approx(1.0)
    labels = np.array([s.label for s in samples])
    assert w[labels == 0].sum() == pytest.approx(0.5) and w[labels == 1].sum() == pytest.approx(0.5)
    share = Counter()
    for s, p in zip(samples, w):
        share[source_of(s)] += p
    # square root: 100 vs 4 images -> shares 10 : 2 within the fake half
    assert share["b.zip:g1"] / share["b.zip:g2"] == pytest.approx(10 / 2)
    flat = draw_weights(samples, np.zeros(len(samples), bool), source_power=0.0)
    assert flat[labels == 1][-1] == pytest.approx(0.25 / 4)  # equal shares per source


def test_draw_weights_give_the_small_band_its_share():
    samples = _samples()
    small = np.array([("small" in s.path) or (s.generator == "g2") for s in samples])
    w = draw_weights(samples, small, small_share=0.2)
    assert w[small].sum() == pytest.approx(0.2)
    labels = np.array([s.label for s in samples])
    assert w[small & (labels == 0)].sum() == pytest.approx(0.1)


def test_draw_order_is_fixed_by_seed_and_epoch():
    w = draw_weights(_samples(), np.zeros(204, bool))
    a, b = draw_order(w, 500, 0, 3), draw_order(w, 500, 0, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, draw_order(w, 500, 0, 4))
