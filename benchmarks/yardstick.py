"""The cross-source yardstick: recipes trained on some sources, judged on sources they never met.

    aigi data build                                          # the packs (once; kept where built)
    python -m benchmarks.yardstick run                       # every recipe of RECIPES, in one run
    python -m benchmarks.yardstick run --recipes default,probe-stats
    python -m benchmarks.yardstick report                    # results -> BENCHMARKS.md

**Sources, not images, are held out.** Every image of the packs (``aigi data build``) belongs
to one source (a repository or archive and the pipeline that made it; ``src/aigi/io/sources.toml``
says which, with its licence), and every source to one split, for both classes alike:

- ``test``: about a third of the sources, spread over generator families and camera kinds;
  never trained on, never used to choose or calibrate anything; the headline figures;
- ``val``: other sources, for choosing a recipe and for calibration (temperature, threshold,
  uncertain band): camera photos and real generators' images only;
- ``train``: the rest. One image in ten of the train sources (by the public hash rule) is
  held back as an *in-source* test set: the yardstick our old figures used, kept as a secondary
  row to show how much it flatters.

A recipe is trained on a manifest of the train split (``aigi train``, the manifest's ``split``
column fixing each row's split), calibrated on the val split, and every held-out image is
scored through :meth:`aigi.Detector.predict`, clean and under each perturbation of
:data:`PERTURBATIONS` (made once per image, applied to real and fake alike). The figures
(:mod:`benchmarks.yardstick_metrics`) are per held-out source, then the mean over sources.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from .harness import RESULTS, SHARED, add_report, log, machine, publish, read_results, subcommands, run_subcommand
from .harness import write_results
from .yardstick_metrics import set_metrics

OUT_JSON = RESULTS / "yardstick.json"
CACHE = Path(os.environ.get("AIGI_CACHE") or Path.home() / ".cache" / "aigi")
WORK = CACHE / "yardstick"
SETS = ("test", "val", "in-source")
PERTURBATIONS = ("none", "jpeg75", "reshare", "resize0.5", "blur1")
