"""benchmarks/fewshot.py end to end on a small model trained here (the fold models take hours)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmarks package at the repository root

from benchmarks.fewshot import measure_fold, render  # noqa: E402
from benchmarks.harness import write_manifest  # noqa: E402
from aigi.io.datasets import load_dataset  # noqa: E402
from aigi.training.config import TrainConfig  # noqa: E402
from aigi.training.loop import train  # noqa: E402
from synthetic import make_dataset, stripes, synthetic_image  # noqa: E402


def save_all(images, folder: Path, label: int, generator: str, family: str) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, im in enumerate(images):
        path = folder / f"{i:03d}.png"
        im.save(path)
        rows.append(dict(path=str(path), label=label, generator=generator, family=family))
    return rows


def test_fewshot_protocol_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data", n_per_class=60, generators=("genA",), size=32)
    # Paths relative to the manifest: the split rule hashes them as written, so absolute ones would
    # give every pytest temporary folder (pytest-N) its own train/val split, and some fail the test.
    manifest = write_manifest([dict(path=f"data/{s.relpath}", label=s.label, generator=s.generator)
                               for s in load_dataset(data).samples], tmp_path / "train.csv")
    model = train(TrainConfig(data=str(manifest), out=str(tmp_path / "model"), backbone="tiny-clip", tune="linear",
                              augment="none", epochs=3, batch_size=16, workers=0, progress=False, precision="fp32",
                              head_lr=1e-2, target_fpr=0.1))
    rng = np.random.default_rng(9)
    family = save_all([stripes(rng) for _ in range(24)], tmp_path / "family", 1, "stripes", "stripes")
    reals = save_all([synthetic_image(rng, False, 32) for _ in range(20)], tmp_path / "reals", 0, "real", "real")
    other = (save_all([synthetic_image(rng, True, 32) for _ in range(20)], tmp_path / "other-fakes", 1, "genA", "genA")
             + save_all([synthetic_image(rng, False, 32) for _ in range(10)], tmp_path / "other-reals", 0, "real", "real"))
    result = measure_fold(model, "stripes", family, reals, other, manifest, tmp_path / "work", ks=(5, 20, 100))
    assert result["n_family"] == 24 and result["n_test_family"] == 12
    assert sorted(result["k"]) == ["20", "5"]  # K = 100 is capped at 12, the same as K = 20
    assert result["k"]["20"]["k_used"] == 12 and result["k"]["5"]["k_used"] == 5
    before, after = result["before"], result["k"]["20"]["after"]
    assert before["recall"] < 0.5 <= after["recall"]
    assert result["k"]["20"]["other_auc_change"] > -0.05
    assert set(after["other_auc_per_family"]) == {"genA"}
    assert result["k"]["5"]["adapt_wall_s"] > 0 and "embed_s" in result["k"]["5"]["timing"]
    fold = {**result, "recipe": "tiny", "held_out_real_groups": ["x"], "load_average": [0.5, 0.6], "date": "today",
            "machine": "here"}
    text = render({"runs": {"tiny:stripes": fold}})
    assert text.startswith("## Few-shot adaptation") and "| tiny | stripes | 24 | 12 | 12 / 20 |" in text
    assert "runs." in text
