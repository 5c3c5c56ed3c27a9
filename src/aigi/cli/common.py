"""What the verbs share: argument groups, loading a model, the split rule, threads, the table row.

Nothing here imports torch at module level: ``aigi detect`` must set OpenMP's wait policy
(:func:`prepare_threads`) before torch starts its thread pool.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ..io.decode import DECODE_WORKERS

# Exit codes of the verbs that score inputs (detect, explain, eval): README "Exit codes" and
# `aigi detect --help` say the same.
EXIT_OK = 0  # every input was scored (an image too small to judge is a result: "uncertain")
EXIT_FAILED_INPUTS = 1  # the run went through, but some input could not be read: its row carries error
EXIT_USAGE = 2  # nothing was scored: no input found, the model or device cannot be used, a bad option

EXIT_CODES_HELP = f"""\
exit status:
  {EXIT_OK}  every input was scored
  {EXIT_FAILED_INPUTS}  some input (a missing path, an unreadable file) could not be scored: each has a row
     with its error, and every other input was scored
  {EXIT_USAGE}  nothing was scored: no image found in the inputs, the model cannot load, the device
     cannot be used (--device gpu, --device cuda without CUDA), or an option is wrong
"""

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
"""

# Only for the verbs that have --split (detect, eval, audit): a help text names no option its
# verb lacks.
SPLITS_HELP = """
splits (--split auto, the default):
  a dataset the model was trained on (named in its config, by path or file name) is scored
  on its test split only, and the command says so; anything else is scored whole.
"""

CROPS_HELP = ("crops scored per image in all (N >= 1), their logits averaged. N is shared evenly between the "
              "scales the image holds (native pixels first when N is odd), and what one scale has no room for goes "
              "to the other; a small image may hold fewer. Default: the model's own number at each scale (the "
              "bundled model: up to 2 native crops, and 2 more at half size on an image whose shorter side is at "
              "least 448 px)")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the verb with one line on stderr and exit status ``code`` (no traceback)."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


def models_help() -> str:
    """The registered model names, one line each (``aigi models``, the epilog of ``detect --help``)."""
    from ..detector.registry import describe_model, registered_names

    names = registered_names()
    width = max(map(len, names), default=0)
    return "".join(f"  {name:<{width}}  {describe_model(name)}\n" for name in names)


def add_model_arg(p: argparse.ArgumentParser, onnx: bool = False) -> None:
    """``--model``: a checkpoint directory or a registered name, ``default`` (the bundled model) when left out;
    ``onnx``: the verb has ``--runtime``, so an exported ``.onnx`` file is one too."""
    onnx_file = ", an exported .onnx file (--runtime onnx)" if onnx else ""
    p.add_argument("--model", default="default",
                   help=f"checkpoint directory{onnx_file} or registered name; `aigi models` lists the names "
                        "(default %(default)s)")


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (``--crops 0`` is refused at once)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_crops_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crops", type=positive_int, default=None, metavar="N", help=CROPS_HELP)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N (an NVIDIA GPU), or mps (Apple silicon); one that cannot be used here "
                        "stops at once, exit status 2 (default %(default)s)")


def add_runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="torch, or onnx (ONNX Runtime; a checkpoint directory is exported once) (default %(default)s)")


def add_runtime_args(p: argparse.ArgumentParser, batch_size: int = 32) -> None:
    add_crops_arg(p)
    p.add_argument("--batch-size", type=int, default=batch_size, help="crops per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS,
                   help="decoding threads (default: half the CPU cores, here %(default)s)")
    add_device_arg(p)
    p.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"],
                   help="torch compute precision; auto = bf16 where the hardware has it (default %(default)s)")
    add_runtime_arg(p)


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
    """A device the torch runtime cannot use here (``gpu``, ``cuda`` without CUDA): one line and
    exit status 2 before anything loads, not a traceback."""
    if runtime != "torch":
        return  # onnxruntime checks its own providers (cuda falls back to the CPU with a warning)
    from ..detector.devices import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as e:
        fail(f"aigi: {e}")  # the message names the device


def load_detector(name: str, device: str, runtime: str = "torch", spinning: bool = True, threads: int | None = None,
                  args: argparse.Namespace | None = None):
    from ..detector.devices import DeviceError
    from ..detector.thresholds import apply_operating_point
    from ..inference.runtime import load_runtime

    check_device(device, runtime)
    try:
        detector = load_runtime(name, runtime=runtime, device=device, spinning=spinning, threads=threads)
    except (FileNotFoundError, ValueError, OSError, ImportError, DeviceError) as e:
        fail(f"aigi: cannot load model: {e}")
    if args is not None:
        try:
            apply_operating_point(detector, getattr(args, "threshold", None), getattr(args, "target_fpr", None),
                                  f"model {name}")
        except ValueError as e:
            fail(f"aigi: {e}")
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


__all__ = ["CROPS_HELP", "EXIT_CODES_HELP", "EXIT_FAILED_INPUTS", "EXIT_OK", "EXIT_USAGE", "SPLITS_HELP",
           "VERDICTS_HELP", "add_crops_arg", "add_decision_args", "add_device_arg", "add_model_arg", "add_runtime_arg", "add_runtime_args",
           "autocast_for", "check_device", "fail", "load_detector", "models_help", "positive_int", "prepare_threads",
           "table_row", "verb_splits"]
