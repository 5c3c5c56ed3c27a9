"""``aigi detect``: score files, folders or zips (or, with ``--ray``, on a Ray cluster)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.splits import AUTO, SPLIT_CHOICES
from .common import (EXIT_CODES_HELP, EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, SPLITS_HELP, VERDICTS_HELP,
                     add_decision_args, add_model_arg, add_runtime_args, autocast_for, load_detector, models_help,
                     prepare_threads, table_row, verb_splits)


def cmd_detect_ray(args: argparse.Namespace, paths: list[str]) -> int:
    from ..inference.distributed import detect_ray

    # Ray's shards hold the files Ray Data lists; a named path that is not there is said here
    # (and fails the run's exit status) instead.
    missing = [p for p in paths if not Path(p).exists() and not Path(p).is_symlink()]
    for p in missing:
        print(f"aigi: {p}: no such file or folder", file=sys.stderr)
    paths = [p for p in paths if p not in missing]
    if not paths:
        return EXIT_USAGE

    if not args.out:
        sys.exit("aigi detect --ray: --out DIR is required (Parquet or JSONL shards are written there)")
    fmt = "jsonl" if args.out.rstrip("/").endswith(".jsonl") else "parquet"
    try:
        summary = detect_ray(args.model, paths, args.out, batch_size=args.batch_size, num_actors=args.actors,
                             output_format=fmt, address=args.address, overwrite=args.overwrite,
                             evidence=not args.no_evidence, threshold=args.threshold, target_fpr=args.target_fpr)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        sys.exit(f"aigi detect --ray: {e}")
    print(f"{summary['n_images']} file(s): {summary['n_images'] - summary['n_errors']} scored "
          f"({summary['n_fake']} AI-generated), {summary['n_errors']} unreadable; {summary['format']} shards in "
          f"{summary['out_dir']}", file=sys.stderr)
    if not summary["n_images"]:
        return EXIT_USAGE
    return EXIT_FAILED_INPUTS if summary["n_errors"] or missing else EXIT_OK


def _count_in_background(bar, paths: list[str], split: str, skip) -> None:
    import threading

    from ..inference.detect import select_inputs

    def count() -> None:
        bar.total = sum(1 for _ in select_inputs(paths, split, skip))

    threading.Thread(target=count, name="aigi-count", daemon=True).start()


def cmd_detect(args: argparse.Namespace) -> int:
    sleeping = prepare_threads(args)
    from tqdm.auto import tqdm

    from ..inference.detect import detect
    from ..inference.writers import ResultWriter

    paths = list(args.paths)  # a named path that is missing gets an error row, like an unreadable file
    if args.ray:
        return cmd_detect_ray(args, paths)
    try:
        writer = ResultWriter(args.out, overwrite=args.overwrite, fmt=args.format) if args.out else None
    except ValueError as e:
        sys.exit(f"aigi detect: {e}")
    detector = load_detector(args.model, args.device, args.runtime, spinning=not sleeping, args=args)
    splits = verb_splits(args, paths, detector, quiet=args.quiet)
    already = len(writer.done) if writer is not None else 0
    if already and not args.quiet:
        print(f"aigi: resuming {args.out}: {len(writer.done)} file(s) already scored are skipped", file=sys.stderr)
    n_scored = n_errors = n_fake = n_small = n_uncertain = n_by_evidence = 0
    show_rows = writer is None or args.verbose
    table = sys.stderr if args.out == "-" else sys.stdout  # with --out -, stdout carries the results only
    bar = tqdm(unit="img", desc="detect", disable=show_rows or args.quiet, dynamic_ncols=True)
    if not bar.disable:  # scoring starts at once; the bar gains a total (and an ETA) when counting ends
        _count_in_background(bar, paths, splits, frozenset(writer.done) if writer is not None else frozenset())
    if show_rows and not args.quiet:
        print(f"{'verdict':<13} {'p_fake':>7}  {'generator':<18} path", file=table)
    pending = []
    finished = False
    try:
        for pred in detect(detector, paths, batch_size=args.batch_size, workers=args.workers, split=splits,
                           autocast=autocast_for(args, detector), crops=args.crops, evidence=not args.no_evidence,
                           skip=writer.done if writer is not None else frozenset()):
            if pred.error:
                n_errors += 1
            elif pred.too_small:
                n_small += 1
            else:
                n_scored += 1
                n_fake += pred.verdict == "ai-generated"
                n_uncertain += pred.verdict == "uncertain"
            n_by_evidence += bool(pred.pixel_verdict and pred.verdict != pred.pixel_verdict)
            if show_rows and not args.quiet:
                print(table_row(pred), file=table)
            bar.update(1)
            if writer is not None:
                pending.append(pred)
                if len(pending) >= args.batch_size:
                    writer.write(pending)
                    pending.clear()
        finished = True
    finally:
        if writer is not None:
            writer.write(pending)
            writer.close(complete=finished)  # an interrupted .json run writes no partial document
        bar.close()
    total = n_scored + n_errors + n_small
    if not args.quiet and total == 0 and already:
        print(f"\nnothing left to score: all {already} file(s) are already in {args.out}", file=sys.stderr)
    elif not args.quiet:
        small = f", {n_small} too small to judge" if n_small else ""
        point = detector.operating_point
        band = f", uncertain band {point.band[0]:.3f}-{point.band[1]:.3f}" if point.band else ""
        uncertain = f", {n_uncertain} uncertain" if point.band or n_uncertain else ""
        changed = f"; {n_by_evidence} verdict(s) decided by the file's metadata" if n_by_evidence else ""
        print(f"\n{total} file(s): {n_scored} scored ({n_fake} AI-generated, {n_scored - n_fake - n_uncertain} real"
              f"{uncertain}){small}, {n_errors} unreadable; threshold {detector.threshold:.3f}{band}{changed}"
              + (f"; results in {args.out}" if args.out not in (None, "-") else ""), file=sys.stderr)
    if total == 0 and not already:
        print("aigi: no image files found", file=sys.stderr)
        return EXIT_USAGE
    if n_errors:
        print(f"aigi detect: {n_errors} of {total} input(s) could not be scored (rows with an error); exit status "
              f"{EXIT_FAILED_INPUTS}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    return EXIT_OK


def add_parser(verbs) -> None:
    p = verbs.add_parser("detect", help="score images, folders or zips", description="Score images: files, folders (recursive) or zips.",
                         epilog=f"{VERDICTS_HELP}{SPLITS_HELP}\nregistered models (--model NAME):\n{models_help()}\n"
                                f"{EXIT_CODES_HELP}",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (walked recursively, image extensions only) or .zip archives; each "
                        "file gets one row, and a path that cannot be read gets a row with its error")
    add_model_arg(p, onnx=True)
    p.add_argument("--out", metavar="FILE", help="write one row per file to FILE.csv, FILE.jsonl or FILE.json, or JSON "
                   "Lines to standard output with '-' (the summary then goes to stderr). An existing .csv or .jsonl "
                   "is resumed (rows are flushed after every batch); .json is one document written at the end, "
                   "atomically, and cannot resume")
    p.add_argument("--format", choices=["csv", "jsonl", "json"], default=None,
                   help="format of --out (default: from its extension; JSON Lines for '-')")
    p.add_argument("--overwrite", action="store_true", help="start --out afresh instead of resuming it")
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="score only this public split of the inputs; auto: the test split of datasets the model was "
                        "trained on, all of anything else (default %(default)s)")
    p.add_argument("--ray", action="store_true", help="score on a Ray cluster (Ray Data); --out is then a folder of shards")
    p.add_argument("--address", default=None, help="with --ray: cluster address (auto, ray://HOST:10001); default a local Ray")
    p.add_argument("--actors", type=int, default=1, help="with --ray: scoring actors, one model each (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every row even with --out")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_runtime_args(p)
    add_decision_args(p)
    p.set_defaults(func=cmd_detect)


__all__ = ["add_parser", "cmd_detect"]
