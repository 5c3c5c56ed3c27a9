"""Packs from pinned sources (:mod:`aigi.io.sources`): what ``aigi data build`` makes.

Every source becomes one pack in the cache, by the rule of ``../shared/data/README.md``, so
that format, size and metadata say nothing about the class:

1. decode (EXIF orientation applied, 8-bit RGB, transparency composited on white, first frame);
2. skip images whose shorter side is under ``MIN_SIDE`` (256 px);
3. ONE centre crop of at most 512 x 512 at the image's own pixels (never resized);
4. save as baseline JPEG, quality 95, 4:4:4 chroma, with no metadata at all;
5. drop exact duplicates (hash of the crop's pixels) and near duplicates (:class:`Deduplicator`)
   of any image packed before it, in this source or an earlier one of the list; a source keeps
   at most ``max_images`` images (and a glob its own ``max_images``), chosen by a hash of their
   path, the same ones every time.

A source whose archive already follows the rule (the packs of ``../shared/data``) is
``copy = true``: its members are copied byte for byte and its provenance CSV's columns carried
over. A pack is ``<cache>/packs/<source>.zip`` (``real/<source>/<name>.jpg`` or
``fake/<generator>/<name>.jpg``; stored, members sorted, dated 1980-01-01, so its bytes are
reproducible) with ``<source>.csv`` beside it (one row per member: repository @ commit,
original path, format and size, label, generator and family or photo kind, camera EXIF make,
model and software, licence) and ``<source>.dropped.csv`` (every file left out, and why).
A pack already built from the same pinned entry is kept, so a cut build resumes where it
stopped; ``sources.csv`` indexes them all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .decode import decode_image, open_encoded
from .samples import ImageDecodeError
from .snapshots import Snapshot
from .sources import FileRule, Source, SourceList

MIN_SIDE = 256
MAX_CROP = 512
JPEG_QUALITY = 95
NEAR_BITS = 6  # dHashes this close (of 64 bits) may be the same picture ...
NEAR_LEVELS = 4.0  # ... and are when their 32x32 thumbnails differ by at most this, on average (of 255)
THUMB = 32
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
PACK_FIELDS = ("member", "source", "label", "generator", "family", "kind", "repo", "commit", "original_path",
               "original_format", "original_wh", "oriented_wh", "crop_wh", "camera_make", "camera_model",
               "exif_software", "licence", "notes", "dhash", "pixel_sha1")
# What a copied archive's own provenance CSV knows better than its pinned entry.
CARRIED_FIELDS = ("original_path", "original_format", "original_wh", "oriented_wh", "crop_wh", "camera_make",
                  "camera_model", "exif_software", "licence", "notes")
DROPPED_FIELDS = ("source", "original_path", "reason")
INDEX_FIELDS = ("source", "group", "split", "kind", "real", "fake", "generators", "families", "repo", "licence")
Log = Callable[[str], None]


def pin(source: Source) -> str:
    """What a pack is made from, the rule included: any change to either rebuilds it."""
    return hashlib.sha1(json.dumps([source.pinned(), MIN_SIDE, MAX_CROP, JPEG_QUALITY, NEAR_BITS, NEAR_LEVELS],
                                   sort_keys=True).encode()).hexdigest()


@dataclass
class Normalised:
    jpeg: bytes  # what goes into the pack
    crop: Image.Image  # its pixels, for the duplicate check
    info: dict  # provenance columns


def dhash(im: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9x8 greyscale thumbnail brighter than its right neighbour."""
    g = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def thumbnail(im: Image.Image) -> np.ndarray:
    """A 32x32 greyscale thumbnail (1,024 bytes), to confirm what the coarse dHash suggests."""
    return np.asarray(im.convert("L").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8).ravel()


def _exif(data: bytes) -> dict:
    try:
        with open_encoded(data) as im:
            exif = im.getexif()
    except Exception:  # noqa: BLE001 - a file whose EXIF cannot be read has none to report
        return {}
    return {"camera_make": str(exif.get(0x010F, "")).strip("\0 "), "camera_model": str(exif.get(0x0110, "")).strip("\0 "),
            "exif_software": str(exif.get(0x0131, "")).strip("\0 ")}


def centre_crop_box(width: int, height: int, side: int = MAX_CROP) -> tuple[int, int, int, int]:
    cw, ch = min(width, side), min(height, side)
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def normalise(data: bytes, name: str, copy: bool = False) -> Normalised:
    """Encoded image -> the pack's JPEG by the rule of the module docstring (``copy``: the bytes
    as they are); ImageDecodeError (too small, unreadable) says why an image is left out."""
    im = decode_image(data, name)  # first: it says why an unreadable file is left out
    with open_encoded(data) as probe:
        original_format, original_wh = probe.format or "?", probe.size
    if copy:
        return Normalised(data, im, {"original_format": original_format, "original_wh": "%dx%d" % original_wh,
                                     "oriented_wh": "%dx%d" % im.size, "crop_wh": "%dx%d" % im.size,
                                     "dhash": f"{dhash(im):016x}", "pixel_sha1": hashlib.sha1(im.tobytes()).hexdigest()})
    if min(im.size) < MIN_SIDE:
        raise ImageDecodeError(name, f"too small ({im.width}x{im.height}, under {MIN_SIDE} px)")
    crop = im.crop(centre_crop_box(*im.size))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    info = {"original_format": original_format, "original_wh": "%dx%d" % original_wh,
            "oriented_wh": "%dx%d" % im.size, "crop_wh": "%dx%d" % crop.size,
            "dhash": f"{dhash(crop):016x}", "pixel_sha1": hashlib.sha1(crop.tobytes()).hexdigest(), **_exif(data)}
    return Normalised(buf.getvalue(), crop, info)


class Deduplicator:
    """Exact (pixel hash) and near duplicates across everything added so far.

    Near: dHashes within ``NEAR_BITS`` bits *and* 32x32 thumbnails within ``NEAR_LEVELS`` grey
    levels on average. The dHash alone is too coarse: two generators' images of one prompt (the
    same cat holding a sign) often share it; the thumbnail tells a re-encoding or a resize of
    one picture from another picture of the same layout.
    """

    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.hashes: list[int] = []
        self.thumbs: list[np.ndarray] = []
        self.owners: list[str] = []

    def add(self, pixel_sha1: str, im: Image.Image, owner: str) -> None:
        self.exact[pixel_sha1] = owner
        self.hashes.append(dhash(im))
        self.thumbs.append(thumbnail(im))
        self.owners.append(owner)

    def duplicate_of(self, pixel_sha1: str, im: Image.Image) -> str | None:
        if pixel_sha1 in self.exact:
            return self.exact[pixel_sha1]
        if not self.hashes:
            return None
        x = np.bitwise_xor(np.array(self.hashes, dtype=np.uint64), np.uint64(dhash(im)))
        distance = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        close = np.flatnonzero(distance <= NEAR_BITS)
        if len(close):
            diff = np.abs(np.stack([self.thumbs[i] for i in close]).astype(np.int16)
                          - thumbnail(im).astype(np.int16)).mean(axis=1)
            if diff.min() <= NEAR_LEVELS:
                return self.owners[int(close[np.argmin(diff)])]
        return None


# ----------------------------------------------------------------------------- building


def _member_name(path: str) -> str:
    stem = Path(path).with_suffix("").as_posix().replace("/", "_")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)[-80:].strip("-_.")
    return f"{safe}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}.jpg"


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            zf.writestr(zipfile.ZipInfo(name, ZIP_DATE), members[name])
    tmp.replace(path)


def write_csv(path: Path, rows: Iterable[dict], fields: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _selected(source: Source, files: list[tuple[str, str, int | None]]) -> tuple[list, list[dict]]:
    """The files a source's globs (and provenance ``match``) pick, in their fixed order."""
    provenance = {r["member"]: r for r in read_csv(source.provenance)} if source.provenance else {}
    chosen, dropped = [], []
    for path, key, size in files:
        rule = source.rule_for(path)
        if rule is None:
            continue
        row = provenance.get(path, {})
        if any(not str(row.get(col, "")).startswith(str(prefix)) for col, prefix in source.match.items()):
            continue
        if size is None:
            dropped.append(dict(source=source.name, original_path=path, reason="absent from the snapshot (4 MiB or more)"))
            continue
        chosen.append((hashlib.sha1(f"{source.name}/{path}".encode()).hexdigest(), path, key, rule, row))
    chosen.sort(key=lambda item: item[0])
    return chosen, dropped


def _row(source: Source, path: str, member: str, rule: FileRule, generator: str, family: str, norm: Normalised,
         provenance: dict) -> dict:
    row = dict(member=member, source=source.name, label=rule.label, generator=generator, family=family,
               kind=rule.kind or source.kind, repo=source.repo or os.path.basename(source.archive),
               commit=source.commit, original_path=path, licence=source.licence, notes=rule.notes, **norm.info)
    if provenance:  # an archive's own record of where its member came from wins
        repo = provenance.get("source_repo", "")
        row.update({k: v for k, v in provenance.items() if k in CARRIED_FIELDS and v})
        if "@" in repo:
            row["repo"], row["commit"] = repo.split("@", 1)
    return row


def build_source(source: Source, snapshot: Snapshot, out: Path, dedup: Deduplicator, families: dict[str, str],
                 log: Log = print) -> list[dict]:
    """One source's pack; returns its member rows. Reuses a pack built from the same pin."""
    pack, table, stamp = out / f"{source.name}.zip", out / f"{source.name}.csv", out / f"{source.name}.pin"
    rows = _load_pack(source, out, dedup)
    if rows is not None:
        log(f"{source.name}: kept the pack built before ({len(rows)} images)")
        return rows
    chosen, dropped = _selected(source, snapshot.files())
    data = dict(snapshot.read(list(dict.fromkeys(item[2] for item in chosen))))
    rows, members, per_rule = [], {}, {}
    for _, path, key, rule, provenance in chosen:
        if len(rows) >= source.max_images or (rule.max_images and per_rule.get(rule.glob, 0) >= rule.max_images):
            limit = source.max_images if len(rows) >= source.max_images else rule.max_images
            dropped.append(dict(source=source.name, original_path=path, reason=f"over max_images ({limit})"))
            continue
        try:
            norm = normalise(data[key], path, copy=source.copy)
        except ImageDecodeError as e:
            dropped.append(dict(source=source.name, original_path=path, reason=e.reason))
            continue
        duplicate = dedup.duplicate_of(norm.info["pixel_sha1"], norm.crop)
        if duplicate is not None:
            dropped.append(dict(source=source.name, original_path=path, reason=f"duplicate of {duplicate}"))
            continue
        generator = rule.generator_of(path) if rule.label == "fake" else ""
        if source.copy:
            member = path
        else:
            member = f"{'fake/' + generator if rule.label == 'fake' else 'real/' + source.name}/{_member_name(path)}"
        members[member] = norm.jpeg
        dedup.add(norm.info["pixel_sha1"], norm.crop, f"{source.name}::{member}")
        rows.append(_row(source, path, member, rule, generator, rule.family or families.get(generator, ""), norm,
                         provenance))
        per_rule[rule.glob] = per_rule.get(rule.glob, 0) + 1
    rows.sort(key=lambda r: r["member"])
    _write_zip(pack, members)
    write_csv(table, rows, PACK_FIELDS)
    write_csv(out / f"{source.name}.dropped.csv", dropped, DROPPED_FIELDS)
    stamp.write_text(pin(source) + "\n")
    log(f"{source.name}: {len(rows)} images packed, {len(dropped)} left out")
    return rows


def index_row(source: Source, rows: list[dict]) -> dict:
    fakes = [r for r in rows if r["label"] == "fake"]
    return dict(source=source.name, group=source.unit, split=source.split, kind=source.kind, real=len(rows) - len(fakes), fake=len(fakes),
                generators=" ".join(sorted({r["generator"] for r in fakes})),
                families=" ".join(sorted({r["family"] for r in fakes if r["family"]})),
                repo=f"{source.repo}@{source.commit}" if source.repo else os.path.basename(source.archive),
                licence=source.licence)


def _load_pack(source: Source, out: Path, dedup: Deduplicator) -> list[dict] | None:
    """A pack built before from this very pin (its images taught to ``dedup``), or None."""
    pack, table, stamp = out / f"{source.name}.zip", out / f"{source.name}.csv", out / f"{source.name}.pin"
    if not (pack.exists() and table.exists() and stamp.exists() and stamp.read_text().strip() == pin(source)):
        return None
    rows = read_csv(table)
    with zipfile.ZipFile(pack) as zf:
        for r in rows:
            dedup.add(r["pixel_sha1"], decode_image(zf.read(r["member"]), r["member"]), f"{source.name}::{r['member']}")
    return rows


def build(source_list: SourceList, mirror: str | os.PathLike, cache: str | os.PathLike,
          only: Iterable[str] = (), fetch: bool = False, log: Log = print) -> Path:
    """Every source's pack under ``<cache>/packs``, in list order (a later source's duplicates of an
    earlier one are left out), and ``sources.csv`` indexing those built. ``only``: build just these
    sources (the packs of the sources before them still count for duplicates). ``fetch``: clone a
    missing snapshot (needs the network). Returns the packs folder."""
    out = Path(cache) / "packs"
    out.mkdir(parents=True, exist_ok=True)
    only = set(only)
    unknown = only - {s.name for s in source_list.sources}
    if unknown:
        raise ValueError(f"no such source(s): {', '.join(sorted(unknown))}")
    dedup = Deduplicator()
    index, missing = [], []
    for source in source_list.sources:
        if only and source.name not in only:
            rows = _load_pack(source, out, dedup)
        else:
            try:
                snapshot = Snapshot(source, mirror, fetch=fetch)
            except (FileNotFoundError, RuntimeError) as e:
                missing.append(source.name)
                log(f"{source.name}: {e}")
                rows = None
            else:
                rows = build_source(source, snapshot, out, dedup, source_list.families, log)
        if rows is not None:
            index.append(index_row(source, rows))
    write_csv(out / "sources.csv", index, INDEX_FIELDS)
    if missing:
        log(f"no snapshot for {len(missing)} source(s): {', '.join(missing)}; their packs are missing")
    return out


__all__ = ["Deduplicator", "PACK_FIELDS", "build", "build_source", "normalise", "pin", "read_csv"]
