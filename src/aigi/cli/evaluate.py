"""``aigi eval``: measure a detector on a labelled dataset and write a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.splits import AUTO, SPLIT_CHOICES
from .common import (SPLITS_HELP, add_decision_args, add_model_arg, add_runtime_args, autocast_for, load_detector,
                     prepare_threads, verb_splits)


def cmd_eval(args: argparse.Namespace) -> int:
    prepare_threads(args)  # the same thread policy as detect: decoders share the cores with the model
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import write_report
    from ..io.datasets import load_datasets

    missing = [d for d in args.data if not Path(d).exists()]
    if missing:
        sys.exit(f"aigi eval: dataset not found: {', '.join(missing)}")
    detector = load_detector(args.model, args.device, args.runtime, args=args)
    splits = verb_splits(args, args.data, detector, quiet=args.quiet)
    try:
        dataset = load_datasets(args.data, splits).subset(args.max_images, args.seed)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi eval: {e}")
    try:
        metrics, predictions = evaluate(detector, dataset, batch_size=args.batch_size, workers=args.workers,
                                        autocast=autocast_for(args, detector), progress=not args.quiet, crops=args.crops)
    except ValueError as e:  # nothing labelled to measure (an empty split, an unlabelled folder)
        sys.exit(f"aigi eval: {' + '.join(args.data)} ({dataset.split}): {e}")
    metrics["data"] = dataset.summary()
    metrics["splits"] = dict(zip(args.data, splits))
    metrics["model"] = str(args.model)
    scored = ", ".join(f"{d} ({s})" for d, s in zip(args.data, splits))
    out = write_report(metrics, args.out, predictions, title=f"aigi eval: {scored}", samples=dataset.samples,
                       worst=args.worst)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{metrics['n_images']} images ({metrics['n_errors']} unreadable; split {dataset.split}): accuracy "
          f"{fmt(metrics['accuracy'])}, real {fmt(metrics['real_accuracy'])}, fake {fmt(metrics['fake_accuracy'])}, "
          f"AUC {fmt(metrics['auc'])}, AP {fmt(metrics['ap'])}")
    print(f"report: {out}")
    return 0


# "Unreadable", never "errors": a count of files that could not be read is not one of mistakes.
DESCRIPTION = ("Score a labelled dataset and write metrics.json, report.md, predictions.csv and plots to --out. "
               "Files that cannot be read are counted as unreadable, apart from the misclassified ones.")


def add_parser(verbs) -> None:
    p = verbs.add_parser("eval", help="measure a detector on a labelled dataset", description=DESCRIPTION,
                         epilog=SPLITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: scored together)")
    add_model_arg(p, onnx=True)
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="public split to evaluate; auto: the test split of datasets the model was trained on, all "
                        "of anything else, and says which (default %(default)s)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--worst", type=int, default=4, help="worst false positives and negatives shown with heatmaps "
                                                        "(each; 0: none) (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="score a fixed random sample of N images (by --seed) instead of all of them")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-images sample (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or split notes, only the summary and errors")
    add_runtime_args(p)
    add_decision_args(p, evidence=False)
    p.set_defaults(func=cmd_eval)


__all__ = ["add_parser", "cmd_eval"]
