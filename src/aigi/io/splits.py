"""Which split of a dataset a verb scores by default: one rule for ``detect``, ``eval`` and ``audit``.

``--split auto`` (the default of the three): a dataset that the model was trained on (its
config's ``training.data.source`` names it, by path or by file name, directly or through a
training CSV manifest's ``dataset::member`` rows) is scored on its **test** split, the only part
that neither trained the model nor chose its epoch and calibration, and the verb says so; any
other input is scored **whole** (``all``). ``aigi audit`` involves no model, so ``auto`` is
``all`` there. An explicit ``--split train|val|test|all`` applies to every input.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from .samples import ARCHIVE_SEPARATOR, SPLITS

AUTO = "auto"
SPLIT_CHOICES = (AUTO, *SPLITS)


def training_sources(config: dict) -> list[str]:
    """The datasets a model's config says it was trained on (paths as written at training time),
    with the dataset roots named by the rows of a training CSV manifest."""
    data = (config.get("training") or {}).get("data") or {}
    source = data.get("source") or ""
    sources = [s.strip() for s in source.split(" + ") if s.strip()]
    sources += list(data.get("roots") or [])  # recorded at training time: the manifest may not travel
    for s in list(sources):
        if s.lower().endswith(".csv") and os.path.isfile(s):
            sources += manifest_roots(s)
    return list(dict.fromkeys(sources))


def manifest_roots(manifest: str) -> list[str]:
    """The datasets a CSV manifest's ``dataset::member`` rows draw on (none for plain paths)."""
    base = os.path.dirname(os.path.abspath(manifest))
    roots: dict[str, None] = {}
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                path = (row.get("path") or "").strip()
                if ARCHIVE_SEPARATOR in path:
                    root = path.split(ARCHIVE_SEPARATOR, 1)[0]
                    roots[root if os.path.isabs(root) else os.path.join(base, root)] = None
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # an unreadable manifest names nothing; the sources themselves still match
    return list(roots)


def trained_on(path: str | os.PathLike, sources: Sequence[str]) -> str | None:
    """How ``path`` matches a training source: ``"path"`` (the same file or folder), ``"name"``
    (the same file name elsewhere: a copy, or the same data on another machine), or None."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    if any(os.path.realpath(s) == real for s in sources):
        return "path"
    name = os.path.basename(os.path.normpath(path))
    if name and any(os.path.basename(os.path.normpath(s)) == name for s in sources):
        return "name"
    return None


def resolve_splits(paths: Sequence[str | os.PathLike], config: dict | None, split: str = AUTO
                   ) -> list[tuple[str, str]]:
    """``(split, note)`` for each input path by the rule of the module docstring; ``note`` says
    why (empty for an explicit split). ``config``: the model's config (None: no model)."""
    if split != AUTO:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
        return [(split, "") for _ in paths]
    sources = training_sources(config or {})
    out = []
    for p in paths:
        how = trained_on(p, sources) if sources else None
        if how is None:
            out.append(("all", f"{os.fspath(p)}: not among the model's training data, every image is scored"
                        if config is not None else ""))
        else:
            by = "" if how == "path" else " (by file name)"
            out.append(("test", f"{os.fspath(p)} is among the model's training data{by}: only its test split is "
                                "scored (--split all scores every image)"))
    return out


__all__ = ["AUTO", "SPLIT_CHOICES", "resolve_splits", "trained_on", "training_sources"]
