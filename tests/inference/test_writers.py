"""Tests for the result formats of aigi.inference.writers.ResultWriter and ``aigi detect --out/--format``:
CSV, JSON Lines, one JSON document (atomic, no resume), and JSON Lines on standard output."""

from __future__ import annotations

import csv
import json

import pytest

from aigi.cli.main import main
from aigi.detector.scoring import Prediction
from aigi.inference import writers
from aigi.inference.writers import FULL_FIELDS, RESULT_FIELDS, ResultWriter, result_format

ROWS = [Prediction("a.png", 0.9, "ai-generated", "genA", 0.8), Prediction("b.jpg", error="corrupt")]


def test_result_format_from_name_or_flag():
    assert result_format("r.csv") == "csv" and result_format("r.JSONL") == "jsonl" and result_format("r.json") == "json"
    assert result_format("-") == "jsonl" and result_format("-", "csv") == "csv"
    assert result_format("results.txt", "json") == "json"
    with pytest.raises(ValueError, match="--format"):
        result_format("results.txt")
    with pytest.raises(ValueError, match="unknown result format"):
        result_format("r.csv", "parquet")


def test_json_is_one_document_written_atomically_at_close(tmp_path):
    out = tmp_path / "sub" / "r.json"
    w = ResultWriter(out)
    w.write(ROWS[:1])
    assert not out.exists()  # nothing until the run ends
    w.write(ROWS[1:])
    w.close()
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == ["a.png", "b.jpg"]
    # JSON documents also carry the image size and every crop's score (for heatmaps).
    assert all(tuple(r) == FULL_FIELDS for r in rows)
    assert rows[1]["p_fake"] is None and rows[1]["error"] == "corrupt"
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]  # no temporary left


def test_json_run_that_fails_leaves_the_earlier_file_as_it_was(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("[]\n")
    with pytest.raises(RuntimeError):
        with ResultWriter(out) as w:
            w.write(ROWS)
            raise RuntimeError("killed mid-run")
    assert out.read_text() == "[]\n"
    assert ResultWriter(out).done == set()  # .json never resumes


def test_stdout_gets_json_lines(capsys):
    with ResultWriter("-") as w:
        w.write(ROWS)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["path"] for x in lines] == ["a.png", "b.jpg"]


def test_writers_follow_result_fields(tmp_path, monkeypatch):
    """Rows are written from RESULT_FIELDS and result_row alone: a new field needs no writer change."""
    fields = (*RESULT_FIELDS, "extra")
    plain = writers.result_row
    monkeypatch.setattr(writers, "RESULT_FIELDS", fields)
    monkeypatch.setattr(writers, "result_row", lambda p, full=False: {**plain(p, full), "extra": "c2pa"})
    for name in ("r.csv", "r.jsonl", "r.json"):
        with ResultWriter(tmp_path / name) as w:
            w.write(ROWS)
    assert tuple(next(csv.reader(open(tmp_path / "r.csv")))) == fields
    assert list(csv.DictReader(open(tmp_path / "r.csv")))[0]["extra"] == "c2pa"
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["extra"] == "c2pa"
    assert json.loads((tmp_path / "r.json").read_text())[1]["extra"] == "c2pa"
    # Resuming still recognises whole records with the wider rows.
    with ResultWriter(tmp_path / "r.csv") as w:
        assert w.done == {"a.png", "b.jpg"}


def test_detect_out_dash_writes_json_lines_to_stdout_and_the_summary_to_stderr(model_dir, images, capsys):
    assert main(["detect", str(images), "--model", str(model_dir), "--out", "-", "-v"]) == 1  # empty.png
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]  # stdout is JSON Lines and nothing else
    assert len(rows) == 7 and tuple(rows[0]) == FULL_FIELDS
    assert any(r["error"] for r in rows)
    assert "7 file(s): 6 scored" in err and "verdict" in err  # -v's table went to stderr


def test_detect_json_and_explicit_format(model_dir, images, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["detect", str(images), "--model", str(model_dir), "--out", str(out), "-q"]) == 1  # empty.png
    assert len(json.loads(out.read_text())) == 7
    txt = tmp_path / "r.txt"
    assert main(["detect", str(images), "--model", str(model_dir), "--out", str(txt), "--format", "csv", "-q"]) == 1
    assert len(list(csv.DictReader(txt.open()))) == 7
    with pytest.raises(SystemExit, match="--format"):
        main(["detect", str(images), "--model", str(model_dir), "--out", str(tmp_path / "r.txt2")])


def test_help_says_which_formats_resume(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cannot resume" in text and ".jsonl is resumed" in text
