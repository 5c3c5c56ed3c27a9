"""``aigi explain``: a heatmap of where an image looks AI-generated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import VERDICTS_HELP, add_decision_args, add_model_arg, load_detector, table_row


def cmd_explain(args: argparse.Namespace) -> int:
    from ..inference.explain import explain, small_png

    if not Path(args.image).is_file():
        sys.exit(f"aigi explain: {args.image}: no such file")
    if Path(args.out).suffix.lower() != ".png":
        sys.exit(f"aigi explain: --out {args.out}: the heatmap is written as a .png")
    detector = load_detector(args.model, args.device, args.runtime, args=args)
    prediction, image = explain(detector, args.image, crops=args.crops, evidence=not args.no_evidence)
    if image is None:
        print(f"aigi explain: {args.image}: {prediction.error}", file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    small_png(image).save(args.out, "PNG", optimize=True)
    print(table_row(prediction))
    print(f"heatmap of {len(prediction.crops)} crop(s): {args.out}", file=sys.stderr)
    return 0


def add_parser(verbs) -> None:
    p = verbs.add_parser("explain", help="draw a heatmap of where an image looks AI-generated",
                         description="Score one image and write it with each crop's p_fake drawn over it (a colour "
                                     "per crop box, a colour bar, the verdict and p_fake in the title).",
                         epilog=VERDICTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, help="the heatmap, a .png")
    add_model_arg(p)
    p.add_argument("--crops", type=int, default=None,
                   help="native-resolution crops to score (default: the model's; more gives a finer map, and the "
                        "verdict then rests on them)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"], help="(default %(default)s)")
    add_decision_args(p)
    p.set_defaults(func=cmd_explain)


__all__ = ["add_parser", "cmd_explain"]
