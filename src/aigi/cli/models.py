"""``aigi models``: the registered model names, one line each (what it is, where its weights come from)."""

from __future__ import annotations

import argparse

from .common import models_help

DESCRIPTION = ("The model names that detect, eval, explain, serve, embed and adapt take besides a checkpoint "
               "directory, one line each: what the model is and where its weights come from. `default` is the one "
               "used when no model is named.")


def cmd_models(args: argparse.Namespace) -> int:
    """Print :func:`~aigi.cli.common.models_help` (the same lines ``aigi detect --help`` ends with)."""
    print(models_help(), end="")
    return 0


def add_parser(verbs) -> None:
    verbs.add_parser("models", help="list the registered model names (for --model NAME)",
                     description=DESCRIPTION).set_defaults(func=cmd_models)


__all__ = ["add_parser", "cmd_models"]
