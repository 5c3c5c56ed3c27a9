"""``aigi synth aligned``: real photos and their round trips through generators' autoencoders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_synth_aligned(args: argparse.Namespace) -> int:
    from ..encoders.autoencoders import AUTOENCODERS
    from ..training.synth import synth_aligned

    names = list(AUTOENCODERS) if "all" in args.autoencoder else list(dict.fromkeys(args.autoencoder))
    missing = [p for p in args.reals if not Path(p).exists()]
    if missing:
        sys.exit(f"aigi synth aligned: not found: {', '.join(missing)}")
    try:
        summary = synth_aligned(args.reals, args.out, names, max_side=args.max_side or None, progress=not args.quiet,
                                threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi synth aligned: {e}")
    print(f"aigi synth aligned: {summary.written} real image(s) written with {len(names)} fake(s) each "
          f"({', '.join(names)}), {summary.skipped_existing} already done, {len(summary.errors)} unreadable; "
          f"{summary.seconds:.0f} s; dataset in {summary.out}", file=sys.stderr)
    return 0 if summary.written or summary.skipped_existing else 1


def add_parser(verbs) -> None:
    p = verbs.add_parser("synth", help="make training data (aligned fakes)",
                         description="Make training data from real images.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    q = kinds.add_parser("aligned", help="real images and their round trips through generators' autoencoders",
                         description="For every real image, its reconstruction through a tiny autoencoder of a "
                                     "latent-diffusion generator family, as a paired dataset: DIR/real/NAME and "
                                     "DIR/fake/<autoencoder>/NAME, same size, same encoding.")
    q.add_argument("reals", nargs="+", metavar="REAL", help="real images: files, folders or zips (fake/** is skipped)")
    q.add_argument("--autoencoder", nargs="+", required=True,
                   choices=["taesd", "taesdxl", "taesd3", "taef1", "taef2", "all"],
                   help="which: taesd (SD 1.x/2.x), taesdxl (SDXL), taesd3 (SD 3), taef1 (FLUX.1), taef2 (FLUX.2), or all")
    q.add_argument("--out", required=True, help="output dataset folder (resumed if it exists)")
    q.add_argument("--max-side", type=int, default=512,
                   help="centre-crop larger images to this many px per side first, never resizing (0: whole image; "
                        "default %(default)s)")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary line and errors")
    q.set_defaults(func=cmd_synth_aligned)


__all__ = ["add_parser", "cmd_synth_aligned"]
