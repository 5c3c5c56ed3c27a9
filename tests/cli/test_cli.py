import csv
import json
import os
import subprocess
import sys

import pytest

from aigi.cli.common import prepare_threads
from aigi.cli.main import build_parser, main
from synthetic import make_dataset


def test_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "aigi.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("detect", "train", "eval", "export"):
        assert verb in out


def test_detect_prints_a_table_and_exits_1_for_unreadable_files(model_dir, images, capsys):
    assert main(["detect", str(images), "--model", str(model_dir)]) == 1  # every file scored but the empty one
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split()[:3] == ["verdict", "p_fake", "generator"]
    assert "empty.png" in out and "empty file" in out
    assert "7 file(s): 6 scored" in err and "1 unreadable" in err


def test_detect_writes_csv_and_jsonl(model_dir, images, tmp_path):
    for suffix in (".csv", ".jsonl"):
        out = tmp_path / f"r{suffix}"
        assert main(["detect", str(images), "--model", str(model_dir), "--out", str(out), "-q"]) == 1  # empty.png
        if suffix == ".csv":
            rows = list(csv.DictReader(out.open()))
        else:
            rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 7
        columns = {"path", "p_fake", "verdict", "pixel_verdict", "generator", "p_generator", "evidence", "error", "note"}
        # JSON Lines rows also carry the reason, the image size and every crop's score (for heatmaps).
        assert set(rows[0]) == (columns if suffix == ".csv" else columns | {"reason", "image_size", "crops"})
        if suffix == ".jsonl":
            scored = [r for r in rows if r["p_fake"] is not None]
            assert scored and all(len(r["crops"]) >= 1 and len(r["crops"][0]["box"]) == 4 for r in scored)


def test_detect_exit_codes_when_nothing_can_be_done(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not an image</html>")
    assert main(["detect", str(bad), "--model", str(model_dir), "-q"]) == 1  # nothing readable: its error row
    assert main(["detect", str(tmp_path / "missing.jpg"), "--model", str(model_dir), "-q"]) == 1  # likewise
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main(["detect", str(empty), "--model", str(model_dir), "-q"]) == 2  # no image to give a row
    with pytest.raises(SystemExit) as e:
        main(["detect", str(bad), "--model", str(tmp_path / "no-model")])
    assert e.value.code == 2 and "cannot load model" in capsys.readouterr().err


def test_train_then_eval_writes_metrics_and_report(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_per_class=30, generators=("genA", "genB"))
    run = tmp_path / "run"
    assert main(["train", str(data), "--backbone", "tiny-clip", "--epochs", "1", "--batch-size", "16",
                 "--workers", "0", "--out", str(run), "-q"]) == 0
    assert (run / "config.json").exists() and (run / "model.safetensors").exists()
    report = tmp_path / "report"
    assert main(["eval", str(data), "--model", str(run), "--split", "all", "--out", str(report), "-q"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("n_images", "n_errors", "accuracy", "real_accuracy", "fake_accuracy", "auc", "ap",
                "per_generator", "attribution"):
        assert key in metrics
    assert metrics["n_images"] == 60
    assert set(metrics["per_generator"]) >= {"genA", "genB"}
    assert {"accuracy", "macro_f1", "labels", "confusion"} <= set(metrics["attribution"])
    assert (report / "report.md").exists() and (report / "roc.png").exists() and (report / "confusion.png").exists()
    assert "accuracy" in capsys.readouterr().out


def test_export_and_detect_with_onnx_runtime(model_dir, images, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(model_dir), "--out", str(onnx_file)]) == 0
    out_torch, out_onnx = tmp_path / "t.csv", tmp_path / "o.csv"
    # 1: the fixture's empty.png gets an error row in both
    assert main(["detect", str(images), "--model", str(model_dir), "--out", str(out_torch), "-q"]) == 1
    assert main(["detect", str(images), "--model", str(onnx_file), "--runtime", "onnx", "--out", str(out_onnx), "-q"]) == 1
    a, b = list(csv.DictReader(out_torch.open())), list(csv.DictReader(out_onnx.open()))
    for x, y in zip(a, b):
        assert x["path"] == y["path"]
        if x["p_fake"]:
            assert abs(float(x["p_fake"]) - float(y["p_fake"])) < 1e-4


def test_importing_the_cli_does_not_load_torch():
    """`aigi detect` must set OpenMP's wait policy before torch loads (prepare_threads)."""
    code = ("import sys, pkgutil, importlib, aigi, aigi.cli, aigi.cli.main; "
            "[importlib.import_module(m.name) for m in pkgutil.iter_modules(aigi.cli.__path__, 'aigi.cli.') "
            "if m.name != 'aigi.cli.__main__']; "
            "aigi.cli.main.build_parser(); assert 'torch' not in sys.modules, 'torch loaded'; "
            "from aigi import Detector; assert 'torch' in sys.modules and Detector.__name__ == 'Detector'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_detect_lets_idle_compute_threads_sleep_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset-by-test")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert prepare_threads(build_parser().parse_args(["detect", "x.jpg"]))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    prepare_threads(build_parser().parse_args(["detect", "x.jpg"]))
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert not prepare_threads(build_parser().parse_args(["detect", "x.jpg", "--workers", "0"]))
    assert "OMP_WAIT_POLICY" not in os.environ
