"""The feature verbs: ``aigi embed`` (encoder features on disk), ``aigi adapt`` (new generators from a
few examples) and ``aigi memory`` (a model's record of its training features, for adapt)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.decode import DECODE_WORKERS
from ..io.samples import SPLITS
from .common import add_device_arg, add_model_arg, add_runtime_args, autocast_for, check_device, load_detector


def cmd_embed(args: argparse.Namespace) -> int:
    from ..inference.embed import embed

    missing = [p for p in args.data if not Path(p).exists()]
    if missing:
        sys.exit(f"aigi embed: no such file or folder: {', '.join(missing)}")
    if args.runtime != "torch":
        sys.exit("aigi embed: features come from the torch encoder; --runtime onnx cannot give them")
    detector = load_detector(args.model, args.device)
    try:
        s = embed(detector, args.data, args.out, batch_size=args.batch_size, workers=args.workers, crops=args.crops,
                  split=args.split, overwrite=args.overwrite, shard_size=args.shard_size,
                  autocast=autocast_for(args, detector), progress=not args.quiet)
    except ValueError as e:
        sys.exit(f"aigi embed: {e}")
    already = f", {s['n_already']} already done" if s["n_already"] else ""
    print(f"{s['n_new']} image(s): {s['n_features']} embedded "
          f"({s['feature_dim']}-d features, at most {s['crops']} crop{'s' if s['crops'] != 1 else ''} per image), {s['n_errors']} unreadable, "
          f"{s['n_too_small']} too small to judge{already}; {s['seconds']:.1f} s; features in {s['out']}", file=sys.stderr)
    return 0 if s["n_features"] or s["n_already"] else 1


def _parse_additions(values: list[str]) -> dict[str, list[str]]:
    add: dict[str, list[str]] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            sys.exit(f"aigi adapt: --add {v!r}: write GENERATOR=PATH (a file, folder, zip or CSV manifest)")
        add.setdefault(name, []).append(path)
    return add


def cmd_adapt(args: argparse.Namespace) -> int:
    from ..training.adapt import adapt

    check_device(args.device)  # before any image is read, in one line
    add = _parse_additions(args.add)
    missing = [p for paths in [*add.values(), args.real, args.train_data] for p in paths if not Path(p).exists()]
    if missing:
        sys.exit(f"aigi adapt: no such file or folder: {', '.join(missing)}")
    try:
        r = adapt(args.model, add, args.out, real=args.real, memory=args.memory, train_data=args.train_data,
                  max_mb=args.memory_mb, new_weight=args.new_weight, l2=args.l2, seed=args.seed,
                  batch_size=args.batch_size, workers=args.workers, device=args.device, progress=not args.quiet)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit(f"aigi adapt: {e}")
    added = ", ".join(f"{a['generator']} (K={a['k']}{', new label' if a['new_label'] else ''})" for a in r["added"])
    real = f"; {r['real']['k']} new real image(s)" if r["real"] else ""
    cal = r["calibration"]
    print(f"aigi adapt: {args.model} + {added}{real}: heads refitted on {r['record']['n_fit']} recorded + new "
          f"features; temperature {cal['before']['temperature']:.3f} -> {cal['temperature']:.3f}, threshold "
          f"{cal['threshold']:.3f} ({cal.get('threshold_rule') or cal.get('reason')}); {r['seconds_total']:.1f} s; "
          f"saved {r['out']}", file=sys.stderr)
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from ..detector.registry import resolve_model_path
    from ..training.memory import MEMORY_NAME, Memory, save_memory_for

    detector = load_detector(args.model, args.device)
    try:
        out = Path(args.out) if args.out else resolve_model_path(args.model) / MEMORY_NAME
        path = save_memory_for(detector, args.data, out, split=args.split, max_mb=args.max_mb, seed=args.seed,
                               batch_size=args.batch_size, workers=args.workers, progress=not args.quiet)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit(f"aigi memory: {e}")
    s = Memory.load(path).summary()
    print(f"aigi memory: {s['n_fit']} training + {s['n_held_out']} validation feature vectors "
          f"({s['n_real']} real, {s['n_fake']} AI-generated, {len(s['per_source'])} sources), "
          f"{path.stat().st_size / 2**20:.2f} MB: {path}", file=sys.stderr)
    return 0


def add_parser(verbs) -> None:
    p = verbs.add_parser("embed", help="write encoder features of images (for probes and aigi adapt)",
                         description="For every image: its pooled encoder features (mean over its crops: what the "
                                     "heads see), each crop's features and box, path, label and generator, as "
                                     "safetensors shards with JSON sidecars in OUT. Resumable.")
    p.add_argument("data", nargs="+", help="files, folders, zips or CSV manifests")
    add_model_arg(p)
    p.add_argument("--out", required=True, help="output directory (an existing one is resumed)")
    p.add_argument("--split", default="all", choices=SPLITS, help="embed only this public split (default %(default)s)")
    p.add_argument("--shard-size", type=int, default=256, help="images per shard file (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="start OUT afresh instead of resuming it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary line and errors")
    add_runtime_args(p)
    p.set_defaults(func=cmd_embed)

    p = verbs.add_parser("adapt", help="teach a detector new generators from a few examples",
                         description="Refit the binary and source heads on frozen features of the new images plus the "
                                     "model's record of its training data (memory.safetensors), recalibrate, and write "
                                     "a new model directory; the encoder is copied byte for byte.")
    add_model_arg(p)
    p.add_argument("--add", action="append", required=True, metavar="GENERATOR=PATH",
                   help="images of a generator to add (file, folder, zip or CSV manifest; repeat for more paths or "
                        "generators)")
    p.add_argument("--real", nargs="+", default=[], metavar="PATH", help="new camera photos for the real class")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--train-data", nargs="+", default=[], metavar="DATA",
                   help="for a model without a record: (a sample of) the data it was trained on, to make one")
    p.add_argument("--memory", default=None, metavar="FILE", help="a record to use instead of MODEL/memory.safetensors")
    p.add_argument("--memory-mb", type=float, default=4.0, help="size bound of the record (default %(default)s)")
    p.add_argument("--new-weight", type=float, default=0.5,
                   help="share of the fake class's weight given to the new generators (default %(default)s)")
    p.add_argument("--l2", type=float, default=0.01, help="pull of the refitted heads towards the old ones (default %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the balanced sample of the record (made or trimmed) (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS, help="decoding threads (default %(default)s)")
    add_device_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only the summary line and errors")
    p.set_defaults(func=cmd_adapt)

    p = verbs.add_parser("memory", help="write a model's record of training features (for aigi adapt)",
                         description="Embed a class- and source-balanced sample of the data a model was trained on "
                                     "(its training split, and the val split held out) into MODEL/memory.safetensors.")
    p.add_argument("model", help="checkpoint directory")
    p.add_argument("data", nargs="+", help="the data it was trained on: folders, zips or CSV manifests")
    p.add_argument("--out", default=None, help="where to write it (default MODEL/memory.safetensors)")
    p.add_argument("--split", default="train", choices=SPLITS, help="split it was trained on (default %(default)s)")
    p.add_argument("--max-mb", type=float, default=4.0, help="size bound (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the balanced sample (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS, help="decoding threads (default %(default)s)")
    add_device_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary line and errors")
    p.set_defaults(func=cmd_memory)


__all__ = ["add_parser", "cmd_adapt", "cmd_embed", "cmd_memory"]
