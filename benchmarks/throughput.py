"""Throughput of ``aigi detect``: forward pass vs. the whole CLI vs. a naive per-image loop.

    python -m benchmarks.throughput                          # the full run (~10 min on 2 cores)
    python -m benchmarks.throughput --models tiny-clip --n-images 500 --no-rss-check   # quick
    python -m benchmarks.throughput --update-md             # also rewrite "## Throughput" in BENCHMARKS.md

What is measured, per model and runtime (torch fp32, torch bf16 autocast, ONNX Runtime):

- **forward**: ``score_batch`` on one pre-made batch of ``--batch-size`` preprocessed images,
  repeated after a warm-up. The ceiling for everything else.
- **end to end**: ``aigi detect FOLDER --model DIR --out results.jsonl -q --workers W
  --batch-size B [--runtime onnx]`` in a fresh subprocess on N synthetic JPEGs. The child runs
  ``aigi.cli.main`` through a small wrapper that notes when ``aigi.inference.detect.detect`` starts
  and ends and reports its own peak RSS (``VmHWM`` of /proc/self/status; ``ru_maxrss`` would
  include the benchmark process's own peak, which Linux carries across fork + exec). "e2e img/s" is N / (time from the
  first request for a prediction to the last one): model loading and imports excluded;
  "incl. startup" divides N by the whole subprocess wall time. bf16: ``--precision bf16``.
- **naive**: ``detector.predict([path])`` one file at a time on a subset.
- **decode only**: ``aigi.inference.detect.iter_decoded`` (read + decode + preprocess, no model) with
  W threads: the ceiling set by the input pipeline.
- **RSS scaling**: peak RSS of ``aigi detect`` (tiny-clip) over 2,000 vs 20,000 small JPEGs.

Every timing runs in a fresh process that loads the model as ``aigi detect`` does (see
:func:`run_measure` for why in-process numbers mislead).

Models: ``tiny-clip`` (``Detector.from_backbone("tiny-clip", ...)``, 32 px input) and
``clip-b32`` (a randomly initialised CLIP ViT-B/32 vision tower, ``CLIPVisionConfig()``
defaults, 224 px, CLIP preprocessing) have random weights -- speed does not depend on them --
and are saved with ``save_pretrained`` into a temporary folder, so that the CLI loads them the
way a user's checkpoint is loaded. ``default`` is a copy of the bundled model; it is included
by ``--models auto`` only where one is bundled (none was when this benchmark was written).

Other processes on the machine distort timings: every measurement records the share of CPU
time used by *other* processes while it ran (from /proc/stat), is retried when that share is
above ``--max-other-cpu``, and is flagged in the output if it stays above.
"""

from __future__ import annotations
import argparse
import datetime as _dt
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .harness import log, machine_info, measured, other_cpu_values, update_markdown
from .measure import run_cli, run_measure
from .photos import make_images, subset_folder
from .throughput_report import SECTION, TARGET_RSS_RATIO, render_section

MODELS = ("tiny-clip", "clip-b32", "default")  # default: the bundled model, where there is one
RUNTIMES = ("torch-fp32", "torch-bf16", "onnx")
# Models whose forward pass is slow on a CPU run on --n-images-large images end to end.
LARGE_MODELS = {"clip-b32"}


def _measured(fn, args: argparse.Namespace, label: str) -> dict:
    """:func:`benchmarks.harness.measured` with this run's --max-other-cpu, --retries and pause."""
    return measured(fn, label, args.max_other_cpu, args.retries, args.retry_pause)


# ----------------------------------------------------------------------------- models


def build_model(name: str, seed: int):
    import torch

    from aigi.detector.model import Detector
    from aigi.encoders.base import Encoder
    from aigi.io.preprocessing import Preprocessing

    torch.manual_seed(seed)
    if name == "tiny-clip":
        return Detector.from_backbone("tiny-clip", ["sd14"])
    if name == "clip-b32":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        encoder = Encoder(CLIPVisionModel(CLIPVisionConfig()))  # ViT-B/32, 224 px, random weights
        return Detector(encoder, Preprocessing(size=224, crop=224), ["real", "sd14"], {"backbone": "clip-vit-b32 (random init)"})
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def prepare_model_dir(name: str, seed: int, directory: Path) -> None:
    """A checkpoint directory for ``name``: built and saved, or a copy of the bundled model
    (a copy, so that the ONNX export lands in the temporary folder, not in site-packages)."""
    if name == "default":
        source = bundled_default_model()
        if source is None:
            raise FileNotFoundError("there is no bundled default model in this install")
        shutil.copytree(source, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.onnx"))
        return
    build_model(name, seed).save_pretrained(directory)


def bundled_default_model() -> str | None:
    from aigi.detector.registry import resolve_model_path

    try:
        return str(resolve_model_path("default"))
    except FileNotFoundError:
        return None



def bf16_supported(detector, batch) -> tuple[bool, str, float | None]:
    """Whether ``score_batch(autocast=True)`` runs here, is faster-capable hardware, and agrees with fp32."""
    import torch

    from aigi.detector.model import use_bf16

    cap = torch.backends.cpu.get_cpu_capability()
    native = use_bf16("auto", torch.device("cpu"))
    try:
        p32, _ = detector.score_batch(batch[:4])
        p16, _ = detector.score_batch(batch[:4], autocast=True)
    except Exception as e:  # noqa: BLE001
        return False, f"autocast failed: {type(e).__name__}: {e}", None
    diff = float(np.abs(p32 - p16).max())
    return True, f"cpu capability {cap}; native bf16 (--precision auto picks it): {'yes' if native else 'no'}", diff


def bench_model(name: str, args: argparse.Namespace, tmp: Path, images: list[Path]) -> dict:
    from aigi.detector.model import Detector
    from aigi.inference.export import ensure_onnx
    from aigi.inference.runtime import OnnxDetector

    large = name in LARGE_MODELS
    n_images = min(args.n_images_large if large else args.n_images, len(images))
    n_naive = min(args.naive_images_large if large else args.naive_images, n_images)
    folder = tmp / "images" if n_images == len(images) else subset_folder(images[:n_images], tmp / f"images_{n_images}")
    model_dir = tmp / "models" / name
    log(f"[{name}] {'copying the bundled model' if name == 'default' else 'building (random weights) and saving'} to {model_dir}")
    prepare_model_dir(name, args.seed, model_dir)
    detector = Detector.from_pretrained(model_dir)  # what `aigi detect` loads
    n_params = sum(p.numel() for p in detector.parameters())
    prep = detector.preprocessing
    batch = np.stack([prep(Image.open(p).convert("RGB")) for p in images[: args.batch_size]])
    result: dict = {
        "model": name,
        "params_m": round(n_params / 1e6, 2),
        "input_px": prep.crop,
        "preprocessing": {"size": prep.size, "crop": prep.crop, "resize": prep.resize},
        "n_images": n_images,
        "n_naive": n_naive,
        "batch_size": args.batch_size,
        "runtimes": {},
    }

    runtimes = list(args.runtimes)
    if "torch-bf16" in runtimes:
        ok, why, diff = bf16_supported(detector, batch)
        result["bf16"] = {"supported": ok, "detail": why, "max_abs_diff_p_fake_vs_fp32": diff}
        if not ok:
            log(f"[{name}] bf16 autocast not supported: {why}")
            runtimes.remove("torch-bf16")
    onnx_detector = None
    if "onnx" in runtimes:
        log(f"[{name}] exporting to ONNX")
        t0 = time.perf_counter()
        try:
            onnx_path = ensure_onnx(model_dir)
            onnx_detector = OnnxDetector.from_file(onnx_path)
            result["onnx_export_s"] = round(time.perf_counter() - t0, 1)
            p32, _ = detector.score_batch(batch[:4])
            po, _ = onnx_detector.score_batch(batch[:4])
            result["onnx_max_abs_diff_p_fake_vs_torch"] = float(np.abs(p32 - po).max())
        except Exception as e:  # noqa: BLE001
            log(f"[{name}] ONNX unavailable: {type(e).__name__}: {e}")
            result["onnx_error"] = f"{type(e).__name__}: {e}"
            runtimes.remove("onnx")

    del detector, onnx_detector
    batch_file = tmp / f"batch-{name}.npy"
    np.save(batch_file, batch)
    base = {"model_dir": str(model_dir), "batch_size": args.batch_size}

    log(f"[{name}] decode + preprocess only ({n_images} images)")
    result["decode_only"] = {
        str(w): _measured(lambda w=w: run_measure({**base, "what": "decode", "folder": str(folder), "workers": w,
                                                  "preprocessing": prep.to_dict()}, tmp), args, f"decode W={w}")
        for w in args.workers
    }
    workers = max(args.workers)
    result["decode_only_processes"] = {
        str(workers): _measured(lambda: run_measure({**base, "what": "decode", "folder": str(folder), "workers": workers,
                                                    "processes": True, "preprocessing": prep.to_dict()}, tmp),
                               args, f"decode {workers} processes")
    }

    for runtime in runtimes:
        entry: dict = {}
        cfg = {**base, "runtime": runtime}
        log(f"[{name}] {runtime}: forward on a batch of {args.batch_size}")
        entry["forward"] = _measured(lambda: run_measure({**cfg, "what": "forward", "batch": str(batch_file),
                                                         "min_seconds": args.min_seconds}, tmp), args, "forward")
        log(f"[{name}] {runtime}: naive predict([path]) loop on {n_naive} images")
        entry["naive"] = _measured(lambda: run_measure({**cfg, "what": "naive", "paths": [str(p) for p in images[:n_naive]]},
                                                      tmp), args, "naive")
        entry["end_to_end"] = {}
        for w in args.workers:
            log(f"[{name}] {runtime}: aigi detect, {n_images} images, --workers {w}")
            e2e = _measured(
                lambda w=w: run_cli(folder, model_dir, tmp / "out" / name / runtime / str(w), w, args.batch_size, runtime),
                args, f"e2e W={w}",
            )
            e2e["vs_forward"] = e2e["img_per_s"] / entry["forward"]["img_per_s"]
            e2e["vs_naive"] = e2e["img_per_s"] / entry["naive"]["img_per_s"]
            entry["end_to_end"][str(w)] = e2e
            log(f"    {e2e['img_per_s']:.1f} img/s (forward {entry['forward']['img_per_s']:.1f}, naive "
                f"{entry['naive']['img_per_s']:.1f}), peak RSS {e2e['peak_rss_mb']:.0f} MB")
        result["runtimes"][runtime] = entry
    return result


def rss_scaling(args: argparse.Namespace, tmp: Path) -> dict:
    """Peak RSS of ``aigi detect`` (tiny-clip, torch) over few vs many small JPEGs."""
    small, large = args.rss_images
    log(f"[rss] making {large} JPEGs of {args.rss_image_size} px")
    paths = make_images(tmp / "rss_large", large, args.rss_image_size, args.seed + 1)
    few = subset_folder(paths[:small], tmp / "rss_small")
    model_dir = tmp / "models" / args.rss_model
    if not (model_dir / "config.json").exists():
        prepare_model_dir(args.rss_model, args.seed, model_dir)
    w = max(args.workers)
    runs = {}
    for n, folder in ((small, few), (large, tmp / "rss_large")):
        log(f"[rss] aigi detect on {n} images")
        runs[str(n)] = _measured(
            lambda folder=folder, n=n: run_cli(folder, model_dir, tmp / "out" / "rss" / str(n), w, args.batch_size, "torch-fp32"),
            args, f"rss {n}",
        )
    ratio = runs[str(large)]["peak_rss_mb"] / runs[str(small)]["peak_rss_mb"]
    log(f"[rss] peak RSS {runs[str(small)]['peak_rss_mb']:.0f} MB -> {runs[str(large)]['peak_rss_mb']:.0f} MB (x{ratio:.2f})")
    return {"model": args.rss_model, "runtime": "torch-fp32", "workers": w, "image_px": args.rss_image_size,
            "runs": runs, "ratio": ratio, "target": TARGET_RSS_RATIO}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="auto",
                   help="comma-separated, from tiny-clip, clip-b32, default (the bundled model); "
                        "auto: tiny-clip,clip-b32 and default where one is bundled (default %(default)s)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated: %(default)s")
    p.add_argument("--n-images", type=int, default=2000, help="JPEGs end to end for small models (default %(default)s)")
    p.add_argument("--n-images-large", type=int, default=500, help="JPEGs end to end for clip-b32 (default %(default)s)")
    p.add_argument("--naive-images", type=int, default=200, help="images in the naive loop, small models (default %(default)s)")
    p.add_argument("--naive-images-large", type=int, default=100, help="images in the naive loop, clip-b32 (default %(default)s)")
    p.add_argument("--image-size", type=int, default=384, help="side of the synthetic JPEGs (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", default="1,2", help="decode threads to try (default %(default)s)")
    p.add_argument("--min-seconds", type=float, default=5.0, help="minimum timed forward duration (default %(default)s)")
    p.add_argument("--rss-images", default="2000,20000", help="image counts of the RSS check (default %(default)s)")
    p.add_argument("--rss-image-size", type=int, default=64)
    p.add_argument("--rss-model", default="tiny-clip", choices=MODELS, help="model of the RSS check (default %(default)s)")
    p.add_argument("--no-rss-check", action="store_true", help="skip the RSS scaling check")
    p.add_argument("--max-other-cpu", type=float, default=0.10,
                   help="retry a measurement when other processes used more than this share of the CPUs (default %(default)s)")
    p.add_argument("--retries", type=int, default=1, help="retries of a disturbed measurement (default %(default)s)")
    p.add_argument("--retry-pause", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", help="work folder (default: a new temporary folder, removed afterwards)")
    p.add_argument("--out", default="benchmarks/results/throughput.json", help="raw results JSON (default %(default)s)")
    p.add_argument("--update-md", action="store_true", help="rewrite the '## Throughput' section of --md")
    p.add_argument("--md", default="BENCHMARKS.md", help="Markdown file for --update-md (default %(default)s)")
    p.add_argument("--render", metavar="JSON", help="measure nothing: print (and with --update-md write) the section of a saved run")
    args = p.parse_args(argv)
    if args.models == "auto":
        args.models = "tiny-clip,clip-b32" + (",default" if bundled_default_model() else "")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    args.workers = [int(w) for w in str(args.workers).split(",")]
    args.rss_images = [int(n) for n in args.rss_images.split(",")]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for r in args.runtimes:
        if r not in RUNTIMES:
            p.error(f"unknown runtime {r!r}; choose from {', '.join(RUNTIMES)}")
    if len(args.rss_images) != 2:
        p.error("--rss-images takes two counts, e.g. 2000,20000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import signal

    # A plain `kill` still removes the temporary folder (the finally clause below runs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render:
        section = render_section(json.loads(Path(args.render).read_text(encoding="utf-8")))
        print(section)
        if args.update_md:
            update_markdown(Path(args.md), section)
            log(f"updated the '{SECTION}' section of {args.md}")
        return 0
    command = "python -m benchmarks.throughput " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t_total = time.perf_counter()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="aigi-throughput-") if not args.tmp else None
    tmp = Path(args.tmp or tmp_ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        data: dict = {
            "benchmark": "throughput",
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command.strip(),
            "machine": machine_info(),
            "bundled_default_model": bundled_default_model(),
            "settings": {k: v for k, v in vars(args).items() if k not in ("tmp", "update_md", "md", "retry_pause")},
            "models": {},
        }
        if data["bundled_default_model"] is None:
            log("note: there is no bundled default model yet; benchmarking random-weight models")
        log(f"machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; work folder {tmp}")
        n = max([args.n_images_large if m in LARGE_MODELS else args.n_images for m in args.models])
        log(f"making {n} synthetic {args.image_size}px JPEGs")
        t0 = time.perf_counter()
        images = make_images(tmp / "images", n, args.image_size, args.seed)
        log(f"  {time.perf_counter() - t0:.0f} s")
        for name in args.models:
            data["models"][name] = bench_model(name, args, tmp, images)
        if not args.no_rss_check:
            data["rss_scaling"] = rss_scaling(args, tmp)
        data["total_s"] = round(time.perf_counter() - t_total, 1)
        data["max_other_cpu_seen"] = max(other_cpu_values(data) or [0.0])
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        section = render_section(data)
        print(section)
        log(f"raw results: {out}")
        if args.update_md:
            update_markdown(Path(args.md), section)
            log(f"updated the '{SECTION}' section of {args.md}")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

