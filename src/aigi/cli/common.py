"""What the verbs share: argument groups, loading a model, the split rule, threads, the table row.

Nothing here imports torch at module level: ``aigi detect`` must set OpenMP's wait policy
(:func:`prepare_threads`) before torch starts its thread pool.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..io.decode import DECODE_WORKERS

VERDICTS_HELP = """\
how verdicts are reached:
  ai-generated / real / uncertain. p_fake is the calibrated probability that the image is
  AI-generated (never changed by what follows). The pixel verdict is 'uncertain' when p_fake
  lies in the model's uncertain band [low, high] (chosen on held-out data: the narrowest band
  around the threshold holding half the held-out errors; models without one never abstain),
  else 'ai-generated' at or above the threshold and 'real' below. The final verdict also
  weighs the file's metadata (C2PA, generator parameters, XMP; camera EXIF is shown, never
  used): a validating C2PA AI declaration or generator parameters make it 'ai-generated'.
  generator / p_generator: for an AI-generated verdict, the generator the image most
  resembles and its probability given that the image is AI-generated; 'unknown' when
  p_generator is under the model's open-set threshold (the value 95% of held-out fakes of
  the trained generators reach): the image matches none of the generators it was trained on.

splits (--split auto, the default of detect, eval and audit):
  a dataset the model was trained on (named in its config, by path or file name) is scored
  on its test split only, and the command says so; anything else is scored whole.
"""


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """``--model``: a checkpoint directory or a registered name, ``default`` (the bundled model) when left out."""
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")


def add_runtime_args(p: argparse.ArgumentParser, batch_size: int = 32) -> None:
    p.add_argument("--crops", type=int, default=None,
                   help="native-resolution crops that cover each image, their logits averaged "
                        "(default: the model's own, 4 for the bundled model)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="crops per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS,
                   help="decoding threads (default: half the CPU cores, here %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"],
                   help="torch compute precision; auto = bf16 where the hardware has it (default %(default)s)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="torch, or onnx (ONNX Runtime; a checkpoint directory is exported once) (default %(default)s)")


def add_decision_args(p: argparse.ArgumentParser, evidence: bool = True) -> None:
    g = p.add_argument_group("verdict options")
    g.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="call AI-generated at p_fake >= P instead of the model's threshold (the uncertain band moves "
                        "with it)")
    g.add_argument("--target-fpr", type=float, default=None, metavar="F",
                   help="choose the threshold that calls at most F of the model's held-out real images AI-generated "
                        "(from the validation scores stored in the model; no retraining)")
    if evidence:  # eval measures the pixel model: its metrics never use the metadata
        g.add_argument("--no-evidence", action="store_true",
                       help="do not read the files' metadata (C2PA, generator parameters, EXIF): the pixel verdict "
                            "is then final")


def check_device(device: str, runtime: str = "torch") -> None:
    """``--device cuda`` where torch has no CUDA: one line saying so, not a traceback."""
    if runtime != "torch" or not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        sys.exit(f"aigi: --device {device}: CUDA is not available here ({why}; torch {torch.__version__}); "
                 "use --device cpu")


def load_detector(name: str, device: str, runtime: str = "torch", spinning: bool = True, threads: int | None = None,
                   args: argparse.Namespace | None = None):
    from ..detector.thresholds import apply_operating_point
    from ..inference.runtime import load_runtime

    check_device(device, runtime)
    try:
        detector = load_runtime(name, runtime=runtime, device=device, spinning=spinning, threads=threads)
    except (FileNotFoundError, ValueError, OSError, ImportError) as e:
        sys.exit(f"aigi: cannot load model: {e}")
    if args is not None:
        try:
            apply_operating_point(detector, getattr(args, "threshold", None), getattr(args, "target_fpr", None),
                                  f"model {name}")
        except ValueError as e:
            sys.exit(f"aigi: {e}")
    return detector


def verb_splits(args: argparse.Namespace, paths: list[str], detector, quiet: bool = False) -> list[str]:
    """Each input's split by the rule of aigi.io.splits; the reason is printed for every dataset
    the model trained on (and, for eval, for every input: it must say what it scored)."""
    from ..io.splits import resolve_splits

    resolved = resolve_splits(paths, getattr(detector, "config", None), args.split)
    for split, note in resolved:
        if note and not quiet and (split != "all" or args.verb == "eval"):
            print(f"aigi {args.verb}: {note}", file=sys.stderr)
    return [split for split, _ in resolved]


def autocast_for(args: argparse.Namespace, detector) -> bool:
    from ..detector.model import use_bf16

    if args.runtime != "torch":
        return False
    return use_bf16(args.precision, detector.device)


def prepare_threads(args: argparse.Namespace) -> bool:
    """``aigi detect`` decodes in threads on the same CPU cores as the model, so idle compute
    threads must sleep, not spin, or they take the decoders' CPU time (the throughput
    benchmark measures the gain). OpenMP reads this when torch loads, so it is set before any
    torch import; a value the user exported wins. True when set for this run."""
    if args.workers <= 0 or args.device != "cpu" or getattr(args, "ray", False):
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def table_row(pred) -> str:
    """One line of detect's table: verdict, p_fake, generator, path, and a short note (why it is
    unreadable or unscored, or what the file's metadata said)."""
    from ..inference.writers import evidence_summary

    if pred.error:
        return f"{'error':<13} {'':>7}  {'':<18} {pred.path}  ({pred.error})"
    notes = [pred.note] if pred.note else []
    found = evidence_summary(pred.evidence)
    if pred.pixel_verdict and pred.verdict != pred.pixel_verdict:
        notes.append(f"pixels alone: {pred.pixel_verdict}; decided by {found or 'the metadata'}")
    elif found:
        notes.append(f"metadata: {found}")
    p_fake = f"{pred.p_fake:>7.4f}" if pred.p_fake is not None else f"{'':>7}"
    note = f"  ({'; '.join(notes)})" if notes else ""
    return f"{pred.verdict:<13} {p_fake}  {pred.generator or '-':<18} {pred.path}{note}"


__all__ = ["VERDICTS_HELP", "add_decision_args", "add_model_arg", "add_runtime_args", "autocast_for", "check_device",
           "load_detector", "prepare_threads", "table_row", "verb_splits"]
