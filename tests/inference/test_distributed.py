"""Tests for aigi.inference.distributed: scoring on a local Ray instance with Ray Data.

A tiny random detector (tiny-clip) and small images made with Pillow, all in tmp dirs;
one Ray instance (2 CPUs, no dashboard) is shared by the module.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from aigi.detector.model import Detector  # noqa: E402
from aigi.inference.detect import detect  # noqa: E402
from aigi.inference.distributed import detect_ray, main, plan_inputs, precheck_file  # noqa: E402

N_GOOD = 20
# Ray Data's own DataContext warns about its deprecated fields; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _noise(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():  # someone else's instance: use it, leave it running
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        # No telemetry: its background thread polls a Prometheus that is not there.
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    Detector.from_backbone("tiny-clip", ["genA"]).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """20 good PNG/JPEG images (some nested), one corrupt .jpg, and a non-image file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    good = []
    for i in range(N_GOOD):
        sub = root / "nested" / "deeper" if i % 4 == 0 else root
        sub.mkdir(parents=True, exist_ok=True)
        ext, fmt = (".png", "PNG") if i % 2 else (".jpg", "JPEG")
        f = sub / f"img{i:02d}{ext}"
        f.write_bytes(_encode(_noise(rng, 16 + i, 12 + (i % 5)), fmt))
        good.append(str(f))
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image, not listed\n")
    return {"root": str(root), "good": sorted(good), "corrupt": str(corrupt)}


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """A zip with two good images and one corrupt member."""
    path = tmp_path_factory.mktemp("zip") / "batch.zip"
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/one.png", _encode(_noise(rng, 10, 10), "PNG"))
        zf.writestr("two.jpg", _encode(_noise(rng, 20, 14), "JPEG"))
        zf.writestr("bad.png", b"\x89PNG\r\n\x1a\n truncated")
        zf.writestr("readme.md", "skipped")
    return str(path)


def _read_rows(out_dir: str, suffix: str) -> list[dict]:
    files = sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith(suffix))
    assert files, f"no *{suffix} shards in {out_dir}: {os.listdir(out_dir)}"
    if suffix == ".parquet":
        return [row for f in files for row in pq.read_table(f).to_pylist()]
    rows = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


# ----------------------------------------------------------------------------- Ray runs


def test_detect_ray_parquet_matches_predict(ray_local, model_dir, images, tmp_path):
    out = tmp_path / "out"
    summary = detect_ray(str(model_dir), [images["root"]], str(out), batch_size=8, num_actors=1)

    rows = _read_rows(str(out), ".parquet")
    by_path = {r["path"]: r for r in rows}
    expected = images["good"] + [images["corrupt"]]
    assert len(rows) == len(expected) == len(by_path)  # exactly one row per input file
    assert sorted(by_path) == sorted(expected)
    assert summary == {"n_images": 21, "n_errors": 1, "n_fake": summary["n_fake"], "out_dir": str(out), "format": "parquet"}

    bad = by_path[images["corrupt"]]
    assert bad["error"] and bad["p_fake"] is None and bad["verdict"] == ""

    reference = Detector.from_pretrained(model_dir).predict(images["good"])
    for pred in reference:
        row = by_path[pred.path]
        assert row["error"] == ""
        assert row["p_fake"] == pytest.approx(pred.p_fake, abs=1e-5)
        assert row["verdict"] == pred.verdict and row["generator"] == pred.generator
    assert summary["n_fake"] == sum(r["verdict"] == "ai-generated" for r in rows)


def test_main_jsonl_with_zip_and_missing_file(ray_local, model_dir, images, zipped, tmp_path, capsys):
    out = tmp_path / "out_jsonl"
    out.mkdir()  # an empty folder is fine
    missing = str(tmp_path / "gone.png")
    first_two = images["good"][:2]
    argv = [str(model_dir), *first_two, zipped, missing, "--out", str(out), "--format", "jsonl", "--batch-size", "2"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_images"] == 6 and summary["n_errors"] == 2 and summary["format"] == "jsonl"

    rows = {r["path"]: r for r in _read_rows(str(out), ".jsonl")}
    assert len(rows) == 6
    assert rows[missing]["error"].startswith("file not found")
    assert rows[f"{zipped}::bad.png"]["error"]
    assert f"{zipped}::readme.md" not in rows

    detector = Detector.from_pretrained(model_dir)
    reference = list(detect(detector, [*first_two, zipped], workers=0))
    scored = [p for p in reference if not p.error]
    assert len(scored) == 4
    for pred in scored:
        assert rows[pred.path]["p_fake"] == pytest.approx(pred.p_fake, abs=1e-5)
        assert rows[pred.path]["error"] == ""

    # Running again into the same folder is refused, unless asked to overwrite.
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    argv = [str(model_dir), *first_two, zipped, "--out", str(out), "--format", "jsonl", "--overwrite"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 5  # without the missing file
    assert len(_read_rows(str(out), ".jsonl")) == 5


def test_cpu_guard():
    # Ray Data needs a CPU beside the actors for its read/write tasks, or it waits forever.
    from aigi.inference.distributed import _check_cpus

    class TwoCpus:
        @staticmethod
        def cluster_resources():
            return {"CPU": 2.0}

    _check_cpus(TwoCpus, 1, strict=True)
    _check_cpus(TwoCpus, 2 * 0.5, strict=True)
    with pytest.raises(ValueError, match="at least 1 more"):
        _check_cpus(TwoCpus, 2, strict=True)  # a local instance cannot grow
    with pytest.warns(RuntimeWarning, match="autoscaling"):
        _check_cpus(TwoCpus, 2, strict=False)  # a cluster might


# ----------------------------------------------------------------------------- without Ray work


def test_plan_inputs(images, zipped, tmp_path):
    plan = plan_inputs([images["root"], zipped, tmp_path / "missing.jpg", tmp_path])
    assert sorted(plan.files) == sorted(images["good"] + [images["corrupt"]])  # notes.txt skipped
    assert sorted(m for _, m in plan.members) == ["a/one.png", "bad.png", "two.jpg"]
    assert {a for a, _ in plan.members} == {zipped}
    assert [(p, r) for p, r in plan.errors] == [(str(tmp_path / "missing.jpg"), "file not found (or a broken link)")]
    assert plan.n_listed == 21 + 3 + 1 and not plan.uris


def test_plan_inputs_relative_paths_become_absolute(images, monkeypatch):
    monkeypatch.chdir(images["root"])
    plan = plan_inputs(["corrupt.jpg", "s3://bucket/prefix"])
    assert plan.files == [images["corrupt"]]
    assert plan.uris == ["s3://bucket/prefix"]


def test_precheck_file(tmp_path):
    f = tmp_path / "ok.png"
    f.write_bytes(b"x")
    assert precheck_file(str(f)) is None
    assert precheck_file(str(tmp_path)) == "not a regular file"
    assert "limit" in precheck_file(str(f), max_bytes=0)
    link = tmp_path / "dangling.png"
    link.symlink_to(tmp_path / "nowhere.png")
    assert precheck_file(str(link)).startswith("file not found")


def test_unreadable_files_become_error_rows_not_reads(images, monkeypatch):
    # Tests may run as root, where chmod 000 does not stop reads; fake the access check instead.
    import aigi.inference.distributed as dist

    monkeypatch.setattr(dist.os, "access", lambda path, mode: not path.endswith("img01.png"))
    plan = plan_inputs([images["root"]])
    denied = [p for p in images["good"] if p.endswith("img01.png")]
    assert plan.errors == [(denied[0], "permission denied")]
    assert denied[0] not in plan.files and len(plan.files) == N_GOOD


def test_refuses_bad_arguments_before_starting_ray(model_dir, images, tmp_path):
    with pytest.raises(ValueError, match="output_format"):
        detect_ray(str(model_dir), [images["root"]], str(tmp_path / "o"), output_format="csv")
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.parquet").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        detect_ray(str(model_dir), [images["root"]], str(full))
    with pytest.raises(FileNotFoundError, match="no model"):
        detect_ray(str(tmp_path / "no-model"), [images["root"]], str(tmp_path / "o"))


def test_missing_ray_message(model_dir, images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'aigi\[ray\]'"):
        detect_ray(str(model_dir), [images["root"]], str(tmp_path / "o"))


def test_cli_detect_ray_flag(ray_local, model_dir, images, tmp_path, capsys):
    from aigi.cli.main import main as aigi_main

    out = tmp_path / "shards"
    # 1: the run completes, and its status says one file could not be scored
    assert aigi_main(["detect", images["root"], "--model", str(model_dir), "--ray", "--out", str(out)]) == 1
    rows = _read_rows(str(out), ".parquet")
    assert len(rows) == N_GOOD + 1 and sum(bool(r["error"]) for r in rows) == 1
    assert "unreadable" in capsys.readouterr().err
