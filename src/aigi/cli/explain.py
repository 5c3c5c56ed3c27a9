"""``aigi explain``: a heatmap of where an image looks AI-generated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (EXIT_FAILED_INPUTS, VERDICTS_HELP, add_crops_arg, add_decision_args, add_device_arg, add_model_arg,
                     add_runtime_arg, fail, load_detector, table_row)


def cmd_explain(args: argparse.Namespace) -> int:
    from ..inference.explain import explain, small_png

    if not Path(args.image).is_file():
        fail(f"aigi explain: {args.image}: no such file", EXIT_FAILED_INPUTS)
    if Path(args.out).suffix.lower() != ".png":
        fail(f"aigi explain: --out {args.out}: the heatmap is written as a .png")
    detector = load_detector(args.model, args.device, args.runtime, args=args)
    prediction, image = explain(detector, args.image, crops=args.crops, evidence=not args.no_evidence)
    if image is None:
        print(f"aigi explain: {args.image}: {prediction.error}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    small_png(image).save(args.out, "PNG", optimize=True)
    print(table_row(prediction))
    print(f"heatmap of {crop_summary(prediction.crops)}: {args.out}", file=sys.stderr)
    return 0


def crop_summary(crops: list[dict]) -> str:
    """``12 crop(s): 8 at native pixels, 4 at half size``: what the heatmap draws, by scale."""
    by_scale: dict[float, int] = {}
    for c in crops:
        by_scale[c.get("scale", 1.0)] = by_scale.get(c.get("scale", 1.0), 0) + 1
    if set(by_scale) <= {1.0}:
        return f"{len(crops)} crop(s) at native pixels"
    names = {1.0: "at native pixels", 0.5: "at half size"}
    parts = [f"{n} {names.get(s, f'at {s:g}x')}" for s, n in sorted(by_scale.items(), reverse=True)]
    return f"{len(crops)} crop(s): {', '.join(parts)}"


def add_parser(verbs) -> None:
    p = verbs.add_parser("explain", help="draw a heatmap of where an image looks AI-generated",
                         description="Score one image and write it with each crop's p_fake drawn over it (a colour "
                                     "per crop box, a colour bar, the verdict and p_fake in the title).",
                         epilog=VERDICTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="the image to score and draw (any format aigi detect reads)")
    p.add_argument("--out", required=True, help="the heatmap, a .png")
    add_model_arg(p, onnx=True)
    add_crops_arg(p)  # more gives a finer map, and the verdict then rests on those crops
    add_device_arg(p)
    add_runtime_arg(p)
    add_decision_args(p)
    p.set_defaults(func=cmd_explain)


__all__ = ["add_parser", "cmd_explain"]
