"""Result files: one row per input file, as CSV, JSON Lines or one JSON document (or stdout).

:class:`ResultWriter` appends and flushes after every batch and resumes a killed run: a
half-written last record is cut off and the paths already written are skipped, so a file ends
with exactly one row per input. :func:`result_row` is the row itself (:data:`RESULT_FIELDS`;
JSON rows also carry the reason, the whole evidence, the image size and every crop's score),
shared with the Ray shards (:mod:`aigi.inference.distributed`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import IO, Iterable

from ..detector.scoring import Prediction

# Columns of a results file. ``evidence`` is a one-line summary here (:func:`evidence_summary`);
# JSON Lines / JSON rows carry the whole evidence dict, the reason of the verdict, each crop's
# score ("crops") and "image_size".
RESULT_FIELDS = ("path", "p_fake", "verdict", "pixel_verdict", "generator", "p_generator", "evidence", "error", "note")
FULL_FIELDS = (*RESULT_FIELDS, "reason", "image_size", "crops")  # a JSON row's keys


def evidence_summary(evidence: dict | None) -> str:
    """The evidence of one file in a few words, for a CSV cell or a table note ("" when none):
    e.g. ``AUTOMATIC1111 parameters (PNG tEXt); EXIF Apple iPhone 13``."""
    if not evidence:
        return ""
    parts = []
    c2 = evidence.get("c2pa") or {}
    if c2.get("error"):
        parts.append("C2PA unreadable")
    elif c2:
        state = "trusted" if c2.get("trusted") else "valid" if c2.get("validates") else "invalid"
        decl = c2.get("ai_declaration")
        parts.append(f"C2PA {state}" + (f", declares {decl.get('digital_source_type')}" if decl else ""))
    gen = evidence.get("generator")
    if gen:
        parts.append(f"{gen.get('tool')} parameters ({gen.get('where')})")
    parts += [f"XMP {d.get('type')}" for d in evidence.get("digital_source_types") or []][:1]
    exif = evidence.get("exif") or {}
    camera = " ".join(dict.fromkeys(x for x in (exif.get("Make"), exif.get("Model")) if x))
    if camera:
        parts.append(f"EXIF {camera}")
    return "; ".join(parts)


def result_row(p: Prediction, full: bool = False) -> dict:
    """The row written for one file. Flat (:data:`RESULT_FIELDS`: CSV, Parquet): the evidence
    as a one-line summary. ``full`` (JSON outputs): also the reason of the verdict, the whole
    evidence dict, the image size and every crop's box and p_fake."""
    row = {
        "path": p.path,
        "p_fake": None if p.p_fake is None else round(p.p_fake, 6),
        "verdict": p.verdict,
        "pixel_verdict": p.pixel_verdict,
        "generator": p.generator,
        "p_generator": None if p.p_generator is None else round(p.p_generator, 6),
        "evidence": evidence_summary(p.evidence),
        "error": p.error,
        "note": p.note,
    }
    if full:
        row["reason"] = p.reason
        row["evidence"] = p.evidence
        row["image_size"] = p.image_size
        row["crops"] = [{"box": c["box"], "p_fake": round(c["p_fake"], 6), "scale": c.get("scale", 1.0)} for c in p.crops]
    return row


def _complete_prefix(text: str, fmt: str) -> int:
    """Length of the longest prefix of ``text`` made of whole records (a kill can cut the last)."""
    end = len(text)
    while end > 0:
        if text[end - 1] == "\n":
            chunk = text[:end]
            try:
                if fmt == "jsonl":
                    json.loads(chunk[chunk.rfind("\n", 0, end - 1) + 1 :])
                    return end
                rows = list(csv.reader(io.StringIO(chunk, newline=""), strict=True))
                if all(len(r) == len(RESULT_FIELDS) for r in rows):
                    return end
            except (ValueError, csv.Error):
                pass  # a newline inside a half-written record: look further back
        end = text.rfind("\n", 0, end - 1) + 1 if end > 1 else 0
    return 0


RESULT_FORMATS = ("csv", "jsonl", "json")
STDOUT = "-"


def result_format(path: str, fmt: str | None = None) -> str:
    """``fmt`` when given, else the one the file name says (``-``, standard output, is JSONL)."""
    if fmt is not None:
        if fmt not in RESULT_FORMATS:
            raise ValueError(f"unknown result format {fmt!r}; choose one of {', '.join(RESULT_FORMATS)}")
        return fmt
    if path == STDOUT:
        return "jsonl"
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in RESULT_FORMATS:
        raise ValueError(f"{path}: results are written as .csv, .jsonl or .json (or name one with --format)")
    return ext


class ResultWriter:
    """Writes one row per file (:data:`RESULT_FIELDS`) as CSV, JSON Lines or one JSON document.

    CSV and JSONL are appended and flushed after every batch, and opening an existing file
    resumes it: a half-written last record (from a kill) is cut off, and :attr:`done` holds the
    paths already written, so that a re-run scores only the rest and the file ends with
    exactly one row per input. ``overwrite=True`` starts afresh.

    ``.json`` is one document (a list of rows), so it is kept in memory and written at
    :meth:`close`, atomically (an interrupted run leaves any earlier file as it was); it
    cannot resume. ``path="-"`` writes to standard output (JSONL unless ``fmt`` says otherwise).
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, fmt: str | None = None) -> None:
        self.path = os.fspath(path)
        self.format = result_format(self.path, fmt)
        self.done: set[str] = set()
        self._rows: list[dict] = []  # the .json document, written at close
        self._closed = False
        keep = 0
        if self.path != STDOUT:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if self.path == STDOUT:
            self._file: IO[str] | None = sys.stdout
        elif self.format == "json":
            self._file = None  # written whole at close
        else:
            existing = "" if overwrite or not os.path.exists(self.path) else self._read()
            header = existing.split("\n", 1)[0]
            if self.format == "csv" and "\n" in existing and header != ",".join(RESULT_FIELDS):
                # Resuming would cut every row of another layout away: refuse, and keep the file.
                raise ValueError(f"{self.path} has the columns {header!r}, not {','.join(RESULT_FIELDS)!r} "
                                 "(written by another aigi version?); pass --overwrite or choose another file")
            keep = _complete_prefix(existing, self.format)
            # surrogateescape keeps non-UTF-8 file names byte-exact instead of crashing the writer.
            self._file = open(self.path, "a" if keep else "w", newline="", encoding="utf-8", errors="surrogateescape")
            if keep:
                self._file.truncate(len(existing[:keep].encode("utf-8", "surrogateescape")))
                self.done = self._paths(existing[:keep])
        if self.format == "csv" and not keep:
            header = io.StringIO(newline="")
            csv.DictWriter(header, fieldnames=RESULT_FIELDS, lineterminator="\n").writeheader()
            self._emit(header.getvalue())

    def _read(self) -> str:
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()

    def _paths(self, text: str) -> set[str]:
        if self.format == "csv":
            return {row["path"] for row in csv.DictReader(io.StringIO(text, newline=""))}
        return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}

    def _emit(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            self._file.flush()

    def write(self, predictions: Iterable[Prediction]) -> None:
        """Write rows as one string and flush: a kill loses at most the records being written."""
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n") if self.format == "csv" else None
        for p in predictions:
            row = result_row(p, full=writer is None)
            if writer is not None:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            elif self.format == "json":
                self._rows.append(row)
            else:
                buf.write(json.dumps(row) + "\n")
            self.done.add(p.path)
        if buf.tell():
            self._emit(buf.getvalue())

    def close(self, complete: bool = True) -> None:
        """Finish the file. ``complete=False`` (the run failed): a .json document is not written."""
        if self._closed:
            return
        self._closed = True
        if self.format == "json" and complete:
            text = json.dumps(self._rows, indent=1) + "\n"
            if self._file is not None:
                self._emit(text)
            else:
                tmp = f"{self.path}.tmp{os.getpid()}"
                with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(text)
                os.replace(tmp, self.path)  # write-then-rename: never a half-written document
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(complete=exc_type is None)


__all__ = ["FULL_FIELDS", "RESULT_FIELDS", "RESULT_FORMATS", "ResultWriter", "evidence_summary", "result_format",
           "result_row"]
