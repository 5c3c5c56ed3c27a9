"""The ``aigi`` command: one verb per job, each a thin layer over the Python API.

    aigi detect PATH... [--model M] [--out results.csv|.jsonl]
    aigi models
    aigi train DATA [--backbone B] [--tune full|last-k|lora|linear|probe] [--epochs 12] --out DIR
    aigi eval DATA --model M [--split auto] --out DIR
    aigi explain IMAGE --out heat.png [--model M] [--crops N]
    aigi embed DATA... --model M --out FEATURES
    aigi adapt --model M --add GENERATOR=PATH... [--real PATH...] --out DIR
    aigi memory MODEL DATA...
    aigi audit DATA... [--split all] [--max-images N] [--out DIR]
    aigi export MODEL --format onnx --out model.onnx
    aigi serve [--model M] [--host 127.0.0.1] [--port 8000] [--workers N] [--api-key-file F]
    aigi synth aligned REAL... --autoencoder taesd|...|all --out DIR
    aigi data build [--cache DIR] [--mirror DIR] [--only A,B]   (and: aigi data list)

Each verb lives in its own module of this package (``detect``, ``models``, ``train``, ``data``,
``features``: embed, adapt and memory, ``evaluate``, ``explain``, ``synth``, ``audit``, ``export``,
``serve``), each a thin layer over the Python API with an ``add_parser`` and a ``cmd_*``;
:mod:`aigi.cli.common` holds what they share. No torch is imported before a verb runs.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import audit, data, detect, evaluate, explain, export, features, models, serve, synth, train

# The order of `aigi --help`.
VERB_MODULES = (detect, models, train, data, features, evaluate, explain, synth, audit, export, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigi", description="Tell camera photos from AI-generated images.")
    parser.add_argument("--version", action="version", version=f"aigi {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("aigi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
