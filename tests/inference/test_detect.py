import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aigi.detector.model import Detector
from aigi.inference.detect import detect, select_inputs
from aigi.inference.writers import RESULT_FIELDS, ResultWriter
from aigi.io.samples import split_of
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


def test_select_inputs_is_what_detect_scores(detector, inputs):
    """The CLI counts select_inputs in the background for the progress bar's total and ETA."""
    folder, archive, single = inputs
    paths = [folder, archive, single, folder / "real"]  # the last one repeats files of the first
    everything = [s.display for s in select_inputs(paths)]
    assert len(everything) == len(set(everything)) == 10 + 1 + 6 + 1  # 10 made + broken.jpg, 6 zipped, single
    assert [p.path for p in detect(detector, paths, batch_size=4, workers=1)] == everything
    skip = set(everything[:5])
    assert [s.display for s in select_inputs(paths, skip=skip)] == everything[5:]
    test_only = [s for s in select_inputs(paths, split="test")]
    assert all(split_of(s.relpath) == "test" for s in test_only) and len(test_only) < len(everything)


def test_thread_count_and_batch_size_do_not_change_scores(detector, inputs):
    folder, _, _ = inputs
    a = [r.p_fake for r in detect(detector, [folder], batch_size=3, workers=0)]
    b = [r.p_fake for r in detect(detector, [folder], batch_size=16, workers=2)]
    assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_writers_produce_one_row_per_file(detector, inputs, tmp_path, suffix):
    folder, _, _ = inputs
    results = list(detect(detector, [folder]))
    out = tmp_path / "new" / "folder" / f"results{suffix}"  # missing folders are created
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


# ----------------------------------------------------------------------------- resumable output


def _rows(path):
    if str(path).endswith(".csv"):
        return list(csv.DictReader(open(path, newline="", encoding="utf-8", errors="surrogateescape")))
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_half_written_last_record_is_repaired_on_resume(detector, inputs, tmp_path, suffix):
    from aigi.cli.main import main

    folder, _, _ = inputs
    model = detector.save_pretrained(tmp_path / "model")
    out = tmp_path / f"r{suffix}"
    assert main(["detect", str(folder), "--model", str(model), "--out", str(out), "-q"]) == 1  # broken.jpg
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    # Keep 4 whole records, then half of the next: what a kill in the middle of a write leaves.
    header = 1 if suffix == ".csv" else 0
    out.write_bytes(b"".join(lines[: header + 4]) + lines[header + 4][:15])
    # 1 when broken.jpg is among the records scored again, 0 when it was among those kept
    assert main(["detect", str(folder), "--model", str(model), "--out", str(out), "-q"]) in (0, 1)
    assert out.read_bytes() == complete


def test_sigkill_at_any_moment_then_rerun_gives_one_row_per_file(detector, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    folder = make_dataset(tmp_path / "many", n_per_class=150)
    model = detector.save_pretrained(tmp_path / "model")
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "aigi.cli", "detect", str(folder), "--model", str(model), "--out", str(out),
           "--batch-size", "4", "-q"]
    rng = np.random.default_rng(0)
    for _ in range(3):  # kill three times at random moments
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and (not out.exists() or out.stat().st_size < 400):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(cmd, check=True)
    rows = _rows(out)
    paths = [r["path"] for r in rows]
    expected = sorted(str(p) for p in folder.rglob("*.png"))
    assert sorted(paths) == expected and len(paths) == len(set(paths))
    reference = {p.path: p.p_fake for p in detect(detector, [folder])}
    assert all(abs(r["p_fake"] - reference[r["path"]]) < 1e-6 for r in rows)


# ----------------------------------------------------------------------------- hostile inputs


def _hostile_corpus(root):
    """Every kind of awkward file a 100,000-image folder contains sooner or later."""
    import io
    import struct
    import zipfile
    import zlib

    root.mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    photo.save(root / "ok.jpg", quality=90)
    (root / "truncated.jpg").write_bytes((root / "ok.jpg").read_bytes()[:300])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("just some text\n")
    (root / "page.jpg").write_text("<!doctype html><html><body>404</body></html>")
    # A PNG whose header claims 100000 x 100000 pixels: must be refused before decoding.
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", 100_000, 100_000) + png[24:29]
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    (root / "bomb.png").write_bytes(bytes(png))
    Image.new("RGB", (1, 1), (255, 0, 0)).save(root / "one_pixel.png")
    Image.new("RGB", (20000, 10), (0, 0, 255)).save(root / "wide.png")
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)).save(root / "sixteen.png")
    pal = Image.new("P", (30, 30), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(root / "palette_alpha.png", transparency=0)
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(root / "anim.webp", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(root / "rotated.jpg", exif=exif)
    locked = root / "locked.jpg"
    photo.save(locked)
    locked.chmod(0)
    os.symlink(root / "loop_b.jpg", root / "loop_a.jpg")
    os.symlink(root / "loop_a.jpg", root / "loop_b.jpg")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    photo.save(os.fsdecode(os.fsencode(str(root)) + b"/latin1_\xe9.png"))
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "cycle")  # a folder link back up: must not be followed
    with zipfile.ZipFile(root / "archive.zip", "w") as zf:
        data = (root / "ok.jpg").read_bytes()
        zf.writestr("../../evil.jpg", data)
        zf.writestr("fine/inside.jpg", data)
        zf.writestr("fine/broken.png", b"\x89PNG\r\n\x1a\n garbage")
    return root


def test_hostile_inputs_each_get_a_row_and_the_run_completes(detector, tmp_path):
    from aigi.cli.main import main

    corpus = _hostile_corpus(tmp_path / "hostile")
    model = detector.save_pretrained(tmp_path / "model")
    out = tmp_path / "r.csv"
    try:
        code = main(["detect", str(corpus), str(corpus / "archive.zip"), "--model", str(model), "--out", str(out), "-q"])
    finally:
        (corpus / "locked.jpg").chmod(0o644)
    assert code == 1  # the run completes, and its status says that some files could not be scored
    rows = {os.path.basename(r["path"].split("::")[-1]): r for r in _rows(out)}
    errors = {name: r["error"] for name, r in rows.items() if r["error"]}
    scored = {name for name, r in rows.items() if not r["error"]}
    assert "decompression" in errors["bomb.png"] and "bomb" in errors["bomb.png"]
    assert "truncated" in errors["truncated.jpg"] or "corrupt" in errors["truncated.jpg"]
    assert "empty" in errors["zero.jpg"]
    assert {"text.jpg", "page.jpg", "loop_a.jpg", "loop_b.jpg", "dangling.jpg", "broken.png"} <= set(errors)
    assert {"ok.jpg", "one_pixel.png", "wide.png", "cmyk.jpg", "sixteen.png", "palette_alpha.png", "anim.gif",
            "anim.webp", "rotated.jpg", "latin1_\udce9.png", "evil.jpg", "inside.jpg"} <= scored
    assert "locked.jpg" in rows  # scored as root, an error row otherwise
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path.parent / "evil.jpg").exists()
    # Exactly one row per file: the folder link back up was not followed.
    assert len(rows) == len(_rows(out)) == 19 + 3  # 19 files in the folder, 3 zip members


def test_a_named_path_that_is_missing_is_never_dropped(detector, inputs, tmp_path):
    """It gets an error row in its place, whatever the split asked for (issue 19: a file the
    user named must never vanish)."""
    folder, archive, single = inputs
    name = next(n for n in (f"gone-{i}.jpg" for i in range(50)) if split_of(n) != "test")  # dropped by split before
    missing = tmp_path / name
    results = list(detect(detector, [single, missing, archive], split=["all", "test", "all"], workers=2))
    assert [r.path for r in results[:2]] == [str(single), str(missing)]
    assert results[1].error and "not found" in results[1].error and not results[0].error
    assert len(results) == 2 + 6
