"""The pinned sources of aigi's packs: ``sources.toml``, read and checked.

A *source* is one public repository (or archive) and the pipeline that made its images. Each
``[[source]]`` table names its repository and commit (or an archive), its licence, the globs of
its usable images and what they are (camera photos of some kind, or which generator made
them), and its split of the cross-source yardstick: whole sources are held out, both classes
(``train``, ``val`` for selection and calibration, ``test`` for nothing but the final figures).
The ``[families]`` table names each generator's family. :mod:`aigi.io.packs` builds the packs.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from .samples import PARTS as SPLITS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SOURCES_FILE = Path(__file__).with_name("sources.toml")
SHARED_PREFIX = "shared:"  # archive = "shared:<file>": a file of the shared data folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".tif", ".tiff", ".bmp")


def default_shared_data() -> Path:
    """Where ``shared:`` archives live: $AIGI_SHARED_DATA, else ``../shared/data`` of the working directory."""
    return Path(os.environ.get("AIGI_SHARED_DATA", "../shared/data"))


@dataclass
class FileRule:
    """One glob of a source and what its images are."""

    glob: str
    label: str  # "real" or "fake"
    generator: str = ""  # fakes: the model that made them; "*": the folder under fake/ names it
    family: str = ""  # fakes: the generator family (default: the [families] table)
    kind: str = ""  # reals: what kind of photos (phone, dslr, film-scan, lowlight, ...)
    max_images: int = 0  # at most this many of this glob (0: only the source's own limit)
    notes: str = ""

    def generator_of(self, path: str) -> str:
        if self.generator != "*":
            return self.generator
        parts = path.split("/")
        return parts[1] if len(parts) > 2 and parts[0] == "fake" else ""


@dataclass
class Source:
    """One pinned source (a ``[[source]]`` table of sources.toml)."""

    name: str
    licence: str
    split: str  # the cross-source yardstick's split: train, val or test
    files: list[FileRule]
    repo: str = ""  # owner/name on GitHub, read from a bare snapshot at ``commit`` ...
    commit: str = ""
    archive: str = ""  # ... or a zip ("shared:<name>" for one of the shared data folder)
    copy: bool = False  # the archive already follows the rule: copy members byte for byte
    provenance: str = ""  # the archive's provenance CSV (a "member" column), carried over
    match: dict = field(default_factory=dict)  # provenance column -> value prefix a member must have
    kind: str = ""
    group: str = ""  # the yardstick's unit: packs of one group are held out together (default: name)
    exclude: list[str] = field(default_factory=list)
    max_images: int = 300
    notes: str = ""

    @property
    def unit(self) -> str:
        return self.group or self.name

    def pinned(self) -> list:
        """What the pack is made from (its split is not: moving a source rebuilds nothing)."""
        return [self.repo, self.commit, self.archive, self.copy, self.match, [vars(f) for f in self.files],
                self.exclude, self.max_images]

    def rule_for(self, path: str) -> FileRule | None:
        if not path.lower().endswith(IMAGE_SUFFIXES) or any(fnmatch.fnmatchcase(path, x) for x in self.exclude):
            return None
        return next((r for r in self.files if fnmatch.fnmatchcase(path, r.glob)), None)


@dataclass
class SourceList:
    """sources.toml: the sources, in build order, and the generator -> family table."""

    sources: list[Source]
    families: dict[str, str]

    def family(self, generator: str) -> str:
        return self.families.get(generator, "")

    def by_name(self) -> dict[str, Source]:
        return {s.name: s for s in self.sources}


def load_sources(path: str | os.PathLike = SOURCES_FILE, shared: str | os.PathLike | None = None) -> SourceList:
    """The pinned source list; a ValueError naming the entry when one is malformed.
    ``shared``: the folder that ``archive = "shared:..."`` names (:func:`default_shared_data`)."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    shared = Path(shared) if shared is not None else default_shared_data()
    families = {str(k): str(v) for k, v in doc.get("families", {}).items()}
    sources, seen = [], set()
    for i, entry in enumerate(doc.get("source", [])):
        entry = dict(entry)
        where = f"{path}: source #{i + 1} ({entry.get('name', '?')})"
        try:
            files = [FileRule(**rule) for rule in entry.pop("files")]
            source = Source(files=files, **entry)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None
        problems = []
        if source.name in seen:
            problems.append("duplicate source name")
        if source.split not in SPLITS:
            problems.append(f"split must be one of {', '.join(SPLITS)}, not {source.split!r}")
        if bool(source.repo) == bool(source.archive):
            problems.append("give either repo (with commit) or archive")
        if source.repo and (len(source.commit) != 40 or any(c not in "0123456789abcdef" for c in source.commit)):
            problems.append("commit must be a full 40-hex git commit")
        for rule in files:
            if rule.label not in ("real", "fake") or (rule.label == "fake" and not rule.generator):
                problems.append(f"{rule.glob}: label must be real or fake, and a fake names its generator")
        if problems:
            raise ValueError(f"{where}: {'; '.join(problems)}")
        for attr in ("archive", "provenance"):
            value = getattr(source, attr)
            if value.startswith(SHARED_PREFIX):
                setattr(source, attr, str(shared / value[len(SHARED_PREFIX):]))
            elif value and not os.path.isabs(value):
                setattr(source, attr, os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value)))
        seen.add(source.name)
        sources.append(source)
    return SourceList(sources, families)


__all__ = ["SOURCES_FILE", "SPLITS", "FileRule", "Source", "SourceList", "default_shared_data", "load_sources"]
