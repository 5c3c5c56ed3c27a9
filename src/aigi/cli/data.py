"""``aigi data``: the pinned public sources of aigi's packs, and the packs built from them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_cache() -> Path:
    """$AIGI_CACHE, else ~/.cache/aigi: packs go to its ``packs`` folder, snapshots to ``mirror``."""
    return Path(os.environ.get("AIGI_CACHE") or Path.home() / ".cache" / "aigi")


def _load(args: argparse.Namespace):
    from ..io.sources import load_sources

    try:
        return load_sources(args.sources, shared=args.shared)
    except (OSError, ValueError) as e:
        sys.exit(f"aigi data: {e}")


def cmd_data_build(args: argparse.Namespace) -> int:
    from ..io.packs import build

    sources = _load(args)
    mirror = args.mirror or os.environ.get("AIGI_MIRROR") or Path(args.cache) / "mirror"
    only = [s for s in (args.only or "").split(",") if s]
    try:
        out = build(sources, mirror, args.cache, only=only, fetch=args.clone,
                    log=lambda line: print(f"aigi data: {line}", file=sys.stderr, flush=True))
    except ValueError as e:
        sys.exit(f"aigi data build: {e}")
    from ..io.packs import read_csv

    index = read_csv(out / "sources.csv")
    wanted = only or [s.name for s in sources.sources]
    built = {r["source"] for r in index}
    print(f"aigi data build: {len(built & set(wanted))} of {len(wanted)} pack(s) in {out} "
          f"({sum(int(r['real']) for r in index):,} real, {sum(int(r['fake']) for r in index):,} AI-generated images)",
          file=sys.stderr)
    return 0 if set(wanted) <= built else 1


def cmd_data_list(args: argparse.Namespace) -> int:
    sources = _load(args)
    built = {}
    index = Path(args.cache) / "packs" / "sources.csv"
    if index.exists():
        from ..io.packs import read_csv

        built = {r["source"]: r for r in read_csv(index)}
    print("| source | split | kind | real | fake | repository @ commit or archive | licence |")
    print("|---|---|---|---:|---:|---|---|")
    for s in sources.sources:
        r = built.get(s.name, {})
        where = f"{s.repo}@{s.commit[:12]}" if s.repo else os.path.basename(s.archive)
        print(f"| {s.name} | {s.split} | {s.kind} | {r.get('real', '')} | {r.get('fake', '')} | {where} | {s.licence} |")
    return 0


def add_parser(verbs) -> None:
    from ..io.sources import SOURCES_FILE

    p = verbs.add_parser("data", help="build the training and evaluation packs from pinned public sources",
                         description="The pinned public sources (repository @ commit, globs, label, licence, "
                                     "cross-source split) and the packs made from them: one centre crop of at most "
                                     "512 px at native pixels per image, JPEG q95 4:4:4, no metadata, duplicates "
                                     "removed across all sources, provenance in a CSV beside each pack.")
    kinds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, text in (("build", cmd_data_build, "build every pack (kept where already built)"),
                             ("list", cmd_data_list, "the source table, with counts where built")):
        q = kinds.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument("--sources", default=str(SOURCES_FILE), help="the pinned source list (default: the one aigi ships)")
        q.add_argument("--cache", default=str(default_cache()),
                       help="where packs go, in its packs/ folder ($AIGI_CACHE; default %(default)s)")
        q.add_argument("--shared", default=None,
                       help="the folder that 'shared:' archives name ($AIGI_SHARED_DATA; default ../shared/data)")
        if name == "build":
            q.add_argument("--mirror", default=None,
                           help="where the git snapshots are: OWNER+NAME/repo or OWNER/NAME.git ($AIGI_MIRROR; "
                                "default CACHE/mirror)")
            q.add_argument("--only", default=None, metavar="A,B", help="build only these sources")
            q.add_argument("--clone", action="store_true", help="git clone a missing snapshot (needs the network)")
        q.set_defaults(func=func)


__all__ = ["add_parser", "cmd_data_build", "cmd_data_list", "default_cache"]
