import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aigi.model import Detector
from aigi.predict import RESULT_FIELDS, ResultWriter, detect
from synthetic import make_dataset, zip_folder


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return Detector.from_backbone("tiny-clip", ["genA"]).eval()


@pytest.fixture
def inputs(tmp_path):
    folder = make_dataset(tmp_path / "folder", n_per_class=5)
    (folder / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    archive = zip_folder(make_dataset(tmp_path / "zipped", n_per_class=3, seed=1), tmp_path / "set.zip")
    single = tmp_path / "single.webp"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(single)
    return folder, archive, single


def test_detect_scores_files_folders_and_zips_in_order(detector, inputs):
    folder, archive, single = inputs
    results = list(detect(detector, [single, folder, archive], batch_size=4, workers=2))
    assert len(results) == 1 + 11 + 6
    assert results[0].path == str(single)
    assert any(r.path.endswith("broken.jpg") and r.error for r in results)
    assert sum(bool(r.error) for r in results) == 1
    zipped = [r for r in results if "::" in r.path]
    assert len(zipped) == 6 and all(r.path.startswith(str(archive) + "::") for r in zipped)
    # Same scores as the simple one-by-one API.
    one_by_one = detector.predict([single])[0]
    assert results[0].p_fake == pytest.approx(one_by_one.p_fake, abs=1e-6)


def test_thread_count_and_batch_size_do_not_change_scores(detector, inputs):
    folder, _, _ = inputs
    a = [r.p_fake for r in detect(detector, [folder], batch_size=3, workers=0)]
    b = [r.p_fake for r in detect(detector, [folder], batch_size=16, workers=2)]
    assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_writers_produce_one_row_per_file(detector, inputs, tmp_path, suffix):
    folder, _, _ = inputs
    results = list(detect(detector, [folder]))
    out = tmp_path / f"results{suffix}"
    with ResultWriter(out) as w:
        w.write(results)
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert tuple(rows[0].keys()) == RESULT_FIELDS
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(results)
    assert [r["path"] for r in rows] == [r.path for r in results]


def test_non_utf8_file_names_survive(detector, tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    Image.new("RGB", (40, 40), (9, 9, 9)).save(os.fsdecode(name))
    results = list(detect(detector, [tmp_path]))
    assert len(results) == 1 and not results[0].error
    out = tmp_path / "r.csv"
    with ResultWriter(out) as w:
        w.write(results)
    assert b"caf\xe9.png" in out.read_bytes()
