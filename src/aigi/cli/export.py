"""``aigi export``: a detector as a self-describing ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import load_detector


def cmd_export(args: argparse.Namespace) -> int:
    from ..detector.model import Detector
    from ..inference.export import export_onnx

    detector = load_detector(args.model, "cpu")
    assert isinstance(detector, Detector)
    # A checkpoint directory gets its export beside the weights; a registered name ("default")
    # gets NAME.onnx here: a ./default/ folder would hide the bundled model from --model default.
    out = args.out or (str(Path(args.model) / "model.onnx") if Path(args.model).is_dir() else f"{Path(args.model).name}.onnx")
    path = export_onnx(detector, out, opset=args.opset)
    print(f"exported {args.model} -> {path} (input pixel_values N x 3 x {detector.preprocessing.crop} x "
          f"{detector.preprocessing.crop}; outputs p_fake, source_probs; preprocessing in its metadata)")
    return 0


def add_parser(verbs) -> None:
    p = verbs.add_parser("export", help="export a detector to ONNX", description="Export a checkpoint to ONNX (preprocessing contract in the metadata).")
    p.add_argument("model", help="checkpoint directory or registered name")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the export format; ONNX only (default %(default)s)")
    p.add_argument("--out", help="output .onnx file (default MODEL/model.onnx for a checkpoint directory, NAME.onnx "
                                 "here for a registered name such as default)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version of the graph (default %(default)s)")
    p.set_defaults(func=cmd_export)


__all__ = ["add_parser", "cmd_export"]
