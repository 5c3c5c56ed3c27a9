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
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = ("tiny-clip", "clip-b32", "default")  # default: the bundled model, where there is one
RUNTIMES = ("torch-fp32", "torch-bf16", "onnx")
# Models whose forward pass is slow on a CPU run on --n-images-large images end to end.
LARGE_MODELS = {"clip-b32"}
SECTION = "## Throughput"
TARGET_E2E_VS_FORWARD = 0.8
TARGET_E2E_VS_NAIVE = 3.0
TARGET_RSS_RATIO = 1.2


# ----------------------------------------------------------------------------- synthetic data


def synthetic_photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like RGB image: gradients, a soft light blob, low-frequency texture, shapes, noise."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / np.float32(size)
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.5)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(2 * r * r))
    img += rng.uniform(-70, 70, 3).astype(np.float32) * blob[..., None]
    texture = Image.fromarray(rng.integers(0, 256, (int(rng.integers(4, 12)),) * 2 + (3,), dtype=np.uint8))
    img = 0.75 * img + 0.25 * np.asarray(texture.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGBA")
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(80, 230)),)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        x1, y1 = x0 + rng.uniform(0.05, 0.6) * size, y0 + rng.uniform(0.05, 0.6) * size
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * size], fill=colour)
    im = Image.alpha_composite(im, overlay).convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    # Fine detail (foliage, fabric, gravel) and sensor noise: what makes real JPEGs cost bits to decode.
    detail = rng.integers(0, 256, (max(size // 3, 2),) * 2 + (1,), dtype=np.uint8).repeat(3, axis=2)
    detail = np.asarray(Image.fromarray(detail).resize((w, h), Image.Resampling.BILINEAR), np.float32) - 128
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(3, 8))
    pixels = np.asarray(im, np.float32) + np.float32(rng.uniform(0.1, 0.35)) * detail + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_images(folder: Path, n: int, size: int, seed: int, quality: int = 90, start: int = 0) -> list[Path]:
    """``n`` seeded synthetic JPEGs ``img_000000.jpg``... in ``folder`` (existing ones are kept)."""
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:06d}.jpg" for i in range(start, start + n)]

    def make(i: int) -> None:
        path = paths[i - start]
        if not path.exists():  # each image has its own seed: the same files whatever the thread order
            synthetic_photo(np.random.default_rng([seed, size, i]), size).save(path, "JPEG", quality=quality)

    with ThreadPoolExecutor(n_cpus()) as pool:
        list(pool.map(make, range(start, start + n), chunksize=64))
    return paths


def subset_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding exactly ``paths`` (hard links; copies where links are not possible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        dst = folder / p.name
        if not dst.exists():
            try:
                os.link(p, dst)
            except OSError:
                shutil.copyfile(p, dst)
    return folder


# ----------------------------------------------------------------------------- CPU contention


def _busy_seconds() -> float:
    """CPU seconds spent busy (all CPUs, all processes) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def cpu_meter(record: dict):
    """Adds ``wall_s`` and ``other_cpu`` (share of all CPUs used by other processes) to ``record``."""
    try:
        busy0, own0 = _busy_seconds(), _own_seconds()
    except OSError:
        busy0 = own0 = None
    t0 = time.perf_counter()
    yield record
    wall = time.perf_counter() - t0
    record["wall_s"] = round(wall, 3)
    if busy0 is not None and wall > 0:
        other = (_busy_seconds() - busy0) - (_own_seconds() - own0)
        record["other_cpu"] = round(max(0.0, other) / (wall * n_cpus()), 3)


def measured(fn, args: argparse.Namespace, label: str) -> dict:
    """Run ``fn() -> dict`` under the CPU meter; retried while other processes use too much CPU."""
    best = None
    for attempt in range(1 + max(0, args.retries)):
        record: dict = {}
        with cpu_meter(record):
            record.update(fn())
        record["attempts"] = attempt + 1
        if best is None or record.get("other_cpu", 0) < best.get("other_cpu", 0):
            best = {**record}
        if record.get("other_cpu", 0) <= args.max_other_cpu:
            break
        log(f"    {label}: other processes used {record['other_cpu']:.0%} of the CPUs; measuring again")
        time.sleep(args.retry_pause)
    best["attempts"] = attempt + 1
    best["disturbed"] = best.get("other_cpu", 0) > args.max_other_cpu
    return best


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


# ----------------------------------------------------------------------------- measurements


def time_forward(detector, batch, autocast: bool, min_seconds: float, min_batches: int = 3) -> dict:
    for _ in range(2):
        detector.score_batch(batch, autocast=autocast)
    n = k = 0
    t0 = time.perf_counter()
    while True:
        detector.score_batch(batch, autocast=autocast)
        n, k = n + len(batch), k + 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and k >= min_batches:
            break
    return {"img_per_s": n / elapsed, "images": n, "batches": k}


def time_naive(detector, paths: list[Path], autocast: bool) -> dict:
    """One image at a time: ``predict([path])`` (bf16: ``autocast=True``)."""

    def one(p: Path) -> None:
        detector.predict([p], autocast=autocast)

    for p in paths[:3]:
        one(p)
    t0 = time.perf_counter()
    for p in paths:
        one(p)
    return {"img_per_s": len(paths) / (time.perf_counter() - t0), "images": len(paths)}


def time_decode(folder: Path, preprocessing, workers: int, batch_size: int) -> dict:
    from aigi.inference.detect import iter_decoded
    from aigi.io.files import iter_inputs

    inflight = max(2 * batch_size, workers * batch_size * 2)  # as score_samples uses it
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_decoded(iter_inputs([str(folder)]), preprocessing, workers, inflight))
    return {"img_per_s": n / (time.perf_counter() - t0), "images": n}


_POOL_PREPROCESSING = None


def _pool_init(preprocessing) -> None:
    global _POOL_PREPROCESSING
    _POOL_PREPROCESSING = preprocessing


def _pool_decode(sample):
    from aigi.inference.detect import _load  # what a decoding thread of `aigi detect` runs per file

    return _load(sample, _POOL_PREPROCESSING)


def time_decode_processes(folder: Path, preprocessing, workers: int) -> dict:
    """The alternative to ``aigi detect``'s decoding threads: a process pool, in input order
    (each array is pickled back to the parent, as a process pipeline must)."""
    import multiprocessing

    from aigi.io.files import iter_inputs

    with multiprocessing.get_context("fork").Pool(workers, _pool_init, (preprocessing,)) as pool:
        pool.map(abs, range(workers))  # the pool is up before the clock starts
        t0 = time.perf_counter()
        n = sum(1 for _ in pool.imap(_pool_decode, iter_inputs([str(folder)]), chunksize=16))
    return {"img_per_s": n / (time.perf_counter() - t0), "images": n}


def _measure_child(cfg_json: str) -> None:
    """Entry point of a fresh measuring process (see :func:`run_measure`): loads the model as
    ``aigi detect`` does, runs one timing and writes it as JSON to ``cfg["stats"]``."""
    cfg = json.loads(cfg_json)
    result: dict = {}
    if cfg["what"] == "decode":
        from aigi.io.preprocessing import Preprocessing

        prep = Preprocessing.from_dict(cfg["preprocessing"])
        if cfg.get("processes"):
            result = time_decode_processes(Path(cfg["folder"]), prep, cfg["workers"])
        else:
            result = time_decode(Path(cfg["folder"]), prep, cfg["workers"], cfg["batch_size"])
    else:
        from aigi.inference.runtime import load_runtime

        runtime = cfg["runtime"]
        detector = load_runtime(cfg["model_dir"], runtime="onnx" if runtime == "onnx" else "torch")
        autocast = runtime == "torch-bf16"
        if cfg["what"] == "forward":
            result = time_forward(detector, np.load(cfg["batch"]), autocast, cfg["min_seconds"])
        else:
            result = time_naive(detector, [Path(p) for p in cfg["paths"]], autocast)
    Path(cfg["stats"]).write_text(json.dumps(result), encoding="utf-8")


def run_measure(cfg: dict, tmp: Path) -> dict:
    """Run one forward / naive / decode timing in a fresh process, as ``aigi detect`` runs.

    In-process numbers depend on what the benchmark process did before: e.g. after an ONNX
    export, glibc's malloc has raised its mmap threshold, and a small model's forward pass runs
    ~1.5x faster than in a fresh process (no page faults for its activations)."""
    stats = tmp / "measure_stats.json"
    stats.unlink(missing_ok=True)
    cfg = {**cfg, "stats": str(stats)}
    code = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.throughput import _measure_child; _measure_child(sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT), json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0 or not stats.exists():
        raise RuntimeError(f"measuring {cfg['what']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(stats.read_text(encoding="utf-8"))


# The child process: runs the real CLI, notes when detect() runs, reports its own peak RSS.
_CHILD = r"""
import json, resource, sys, time
t_start = time.perf_counter()
stats_path, argv = sys.argv[1], sys.argv[2:]
from aigi.cli.common import prepare_threads
from aigi.cli.main import build_parser
prepare_threads(build_parser().parse_args(argv))  # as main() does, before torch loads
import aigi.inference.detect as _predict
_detect, marks = _predict.detect, {"n": 0}
def detect(*args, **kwargs):
    marks["autocast"] = bool(kwargs.get("autocast"))
    marks["t_first_request"] = time.perf_counter()
    for pred in _detect(*args, **kwargs):
        marks["n"] += 1
        marks["n_errors"] = marks.get("n_errors", 0) + bool(pred.error)
        yield pred
    marks["t_last"] = time.perf_counter()
_predict.detect = detect
from aigi.cli.main import main
rc = main(argv)
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM is the peak RSS of this process image. ru_maxrss is not: Linux carries the parent's
# high-water mark across fork/vfork + exec into it (a big benchmark process would show through).
try:
    with open("/proc/self/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = None
marks.update(rc=rc, t_start=t_start, t_exit=time.perf_counter(), vmhwm_kb=hwm, ru_maxrss_kb=ru.ru_maxrss,
             cpu_s=ru.ru_utime + ru.ru_stime)
with open(stats_path, "w") as f:
    json.dump(marks, f)
sys.exit(rc)
"""


def run_cli(folder: Path, model_dir: Path, out_dir: Path, workers: int, batch_size: int, runtime: str) -> dict:
    """``aigi detect`` in a subprocess; img/s, wall time, peak RSS."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results, stats = out_dir / "results.jsonl", out_dir / "child_stats.json"
    for p in (results, stats):
        p.unlink(missing_ok=True)
    argv = ["detect", str(folder), "--model", str(model_dir), "--out", str(results), "-q",
            "--workers", str(workers), "--batch-size", str(batch_size)]
    if runtime == "onnx":
        argv += ["--runtime", "onnx"]
    elif runtime == "torch-bf16":
        argv += ["--precision", "bf16"]
    cmd = [sys.executable, "-c", _CHILD, str(stats), *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not stats.exists():
        raise RuntimeError(f"aigi {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    s = json.loads(stats.read_text())
    with open(results, encoding="utf-8") as f:
        rows = sum(1 for _ in f)
    n = s["n"]
    if rows != n or s.get("n_errors", 0):
        raise RuntimeError(f"aigi detect wrote {rows} rows for {n} predictions ({s.get('n_errors', 0)} errors)")
    if s.get("autocast") != (runtime == "torch-bf16"):
        raise RuntimeError(f"aigi detect ran with autocast={s.get('autocast')} for {runtime}")
    run_s = s["t_last"] - s["t_first_request"]
    return {
        "cli": "aigi " + " ".join(shlex.quote(a) for a in argv),
        "images": n,
        "img_per_s": n / run_s,
        "img_per_s_incl_startup": n / wall,
        "run_s": round(run_s, 3),
        "startup_s": round(s["t_first_request"] - s["t_start"], 3),
        "process_wall_s": round(wall, 3),
        "process_cpu_s": round(s["cpu_s"], 3),
        "peak_rss_mb": round((s["vmhwm_kb"] or s["ru_maxrss_kb"]) / 1024, 1),
        "peak_rss_source": "VmHWM" if s["vmhwm_kb"] else "ru_maxrss",
    }


# ----------------------------------------------------------------------------- the benchmark


def machine_info() -> dict:
    import torch

    info: dict = {"cpu": platform.processor() or platform.machine(), "cores": n_cpus(), "os_cpu_count": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        if m:
            info["cpu"] = m.group(1).strip()
        flags = set((re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M) or ["", ""])[1].split())
        info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"})
        m = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
        if m:
            info["memory_gb"] = round(int(m.group(1)) / 2**20, 1)
    except OSError:
        pass
    info["env"] = {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "ORT_", "TORCH_"))}
    info["python"] = platform.python_version()
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    for mod in ("onnxruntime", "transformers", "PIL", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        import aigi

        info["aigi"] = aigi.__version__
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True, text=True)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip() + ("+dirty src" if dirty.stdout.strip() else "")
    except (ImportError, OSError):
        pass
    return info


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
        str(w): measured(lambda w=w: run_measure({**base, "what": "decode", "folder": str(folder), "workers": w,
                                                  "preprocessing": prep.to_dict()}, tmp), args, f"decode W={w}")
        for w in args.workers
    }
    workers = max(args.workers)
    result["decode_only_processes"] = {
        str(workers): measured(lambda: run_measure({**base, "what": "decode", "folder": str(folder), "workers": workers,
                                                    "processes": True, "preprocessing": prep.to_dict()}, tmp),
                               args, f"decode {workers} processes")
    }

    for runtime in runtimes:
        entry: dict = {}
        cfg = {**base, "runtime": runtime}
        log(f"[{name}] {runtime}: forward on a batch of {args.batch_size}")
        entry["forward"] = measured(lambda: run_measure({**cfg, "what": "forward", "batch": str(batch_file),
                                                         "min_seconds": args.min_seconds}, tmp), args, "forward")
        log(f"[{name}] {runtime}: naive predict([path]) loop on {n_naive} images")
        entry["naive"] = measured(lambda: run_measure({**cfg, "what": "naive", "paths": [str(p) for p in images[:n_naive]]},
                                                      tmp), args, "naive")
        entry["end_to_end"] = {}
        for w in args.workers:
            log(f"[{name}] {runtime}: aigi detect, {n_images} images, --workers {w}")
            e2e = measured(
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
        runs[str(n)] = measured(
            lambda folder=folder, n=n: run_cli(folder, model_dir, tmp / "out" / "rss" / str(n), w, args.batch_size, "torch-fp32"),
            args, f"rss {n}",
        )
    ratio = runs[str(large)]["peak_rss_mb"] / runs[str(small)]["peak_rss_mb"]
    log(f"[rss] peak RSS {runs[str(small)]['peak_rss_mb']:.0f} MB -> {runs[str(large)]['peak_rss_mb']:.0f} MB (x{ratio:.2f})")
    return {"model": args.rss_model, "runtime": "torch-fp32", "workers": w, "image_px": args.rss_image_size,
            "runs": runs, "ratio": ratio, "target": TARGET_RSS_RATIO}


# ----------------------------------------------------------------------------- Markdown


def cpu_bound(forward: float, decode: float | None) -> float | None:
    """img/s if the forward pass and decoding shared the CPUs perfectly: each image costs the
    CPU share of its forward pass plus that of its decoding (both measured on all cores)."""
    if not forward or not decode:
        return None
    return 1.0 / (1.0 / forward + 1.0 / decode)


def _other_cpu_values(obj) -> list[float]:
    if isinstance(obj, dict):
        own = [obj["other_cpu"]] if isinstance(obj.get("other_cpu"), (int, float)) else []
        return own + [v for x in obj.values() for v in _other_cpu_values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _other_cpu_values(x)]
    return []


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}" if v < 1000 else f"{v:,.0f}"


def _flag(rec: dict) -> str:
    return "\\*" if rec.get("disturbed") else ""


def _check(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "✅" if ok else "❌"


def render_section(data: dict) -> str:
    m, s = data["machine"], data["settings"]
    lines = [
        SECTION,
        "",
        f"Measured {data['date']} with `{data['command']}` on {m['cores']} CPU cores "
        f"({m['cpu']}; {', '.join(m.get('cpu_flags', [])) or 'no AVX-512'}), no GPU; torch {m['torch']} "
        f"({m['torch_threads']} threads), onnxruntime {m.get('onnxruntime')}, transformers {m.get('transformers')}, "
        f"Pillow {m.get('PIL')}; aigi {m.get('aigi')} ({m.get('git_commit', '?')})"
        + ("; environment " + ", ".join(f"`{k}={v}`" for k, v in m["env"].items()) if m.get("env") else "")
        + ". Raw numbers: "
        f"`{s['out']}`. Total benchmark time {data['total_s'] / 60:.1f} min.",
        "",
        "- `tiny-clip` and `clip-b32` have **random weights** (speed does not depend on them): "
        "`tiny-clip` is the test/smoke encoder (32 px input), `clip-b32` a CLIP ViT-B/32 vision tower "
        "(`CLIPVisionConfig()`, 224 px, CLIP preprocessing), the default backbone of `aigi train`. "
        + ("There was no bundled default model when this ran, so `aigi detect` needed `--model DIR`."
           if data.get("bundled_default_model") is None else
           "`default` is the bundled model (what `aigi detect` uses without `--model`)."),
        f"- Inputs: synthetic photo-like JPEGs, {s['image_size']}×{s['image_size']}, quality 90, seeded; "
        f"batch size {s['batch_size']}; image counts per model in its heading.",
        "- Every timing runs in a fresh process that loads the model as `aigi detect` does. "
        "**forward**: `score_batch` on a pre-made batch, after warm-up. **e2e**: "
        "`aigi detect FOLDER --model DIR --out results.jsonl -q --workers W --batch-size B [--runtime onnx]` "
        "in a subprocess; images / time from the first to the last prediction (imports and model "
        "loading excluded); **e2e incl. startup** divides by the whole process wall time. "
        "**naive**: `detector.predict([path])` one file at a time. **peak RSS**: `VmHWM` of the "
        "`aigi detect` process. **decode only**: read + decode + preprocess with W threads, no model; "
        "the same with a pool of W processes (arrays pickled back) is the alternative `aigi detect` does not use.",
        "- `aigi detect` lets idle compute threads sleep while its decoding threads run (`OMP_WAIT_POLICY=PASSIVE`, "
        "ONNX Runtime spinning off); forward and naive timings keep the libraries' defaults, their faster setting.",
        "- torch bf16 = `torch.autocast(bfloat16)`: `score_batch(autocast=True)`, `aigi detect --precision bf16`; "
        "the naive bf16 loop runs `predict`'s steps with `autocast=True`.",
        "- **CPU bound** = 1 / (1 / forward + 1 / decode-only with the best thread count): what end to end "
        "could reach if decoding and the forward pass shared the cores perfectly. Where decoding is as slow "
        "as the forward pass, e2e / forward cannot reach 0.8 on this machine; e2e / CPU bound shows how "
        "much of the reachable speed is lost in the pipeline.",
        f"- Targets: e2e / forward ≥ {TARGET_E2E_VS_FORWARD}, e2e / naive ≥ {TARGET_E2E_VS_NAIVE:g}, "
        f"peak RSS 20k / 2k images ≤ {TARGET_RSS_RATIO}. \\* = other processes used more than "
        f"{s['max_other_cpu']:.0%} of the CPUs during that measurement (after {s['retries']} "
        f"retr{'y' if s['retries'] == 1 else 'ies'}); the largest share seen in the kept measurements was "
        f"{data.get('max_other_cpu_seen', 0):.0%}.",
        "",
    ]
    for name, r in data["models"].items():
        lines += [
            f"### {name} ({r['params_m']:g} M parameters, {r['input_px']} px input; "
            f"{r['n_images']} images end to end, {r['n_naive']} naive)",
            "",
            "| runtime | workers | forward img/s | e2e img/s | e2e incl. startup | naive img/s | e2e / forward | e2e / naive | e2e / CPU bound | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        decode_best = max((v["img_per_s"] for v in r["decode_only"].values()), default=None)
        for runtime, e in r["runtimes"].items():
            fw, nv = e["forward"], e["naive"]
            bound = cpu_bound(fw["img_per_s"], decode_best)
            for w, x in e["end_to_end"].items():
                vs_bound = "–" if bound is None else f"{x['img_per_s'] / bound:.2f}"
                lines.append(
                    f"| {runtime} | {w} | {_f(fw['img_per_s'])}{_flag(fw)} | {_f(x['img_per_s'])}{_flag(x)} | "
                    f"{_f(x['img_per_s_incl_startup'])} | {_f(nv['img_per_s'])}{_flag(nv)} | "
                    f"{x['vs_forward']:.2f} {_check(x['vs_forward'], TARGET_E2E_VS_FORWARD)} | "
                    f"{x['vs_naive']:.1f} {_check(x['vs_naive'], TARGET_E2E_VS_NAIVE)} | "
                    f"{vs_bound} | {x['peak_rss_mb']:,.0f} |"
                )
        dec = ", ".join(f"{_f(v['img_per_s'])}{_flag(v)} img/s with {w} thread{'s' if w != '1' else ''}"
                        for w, v in r["decode_only"].items())
        dec += "".join(f"; {_f(v['img_per_s'])}{_flag(v)} img/s with a pool of {w} processes"
                       for w, v in r.get("decode_only_processes", {}).items())
        notes = [f"Decode + preprocess only: {dec}."]
        if "bf16" in r and r["bf16"].get("max_abs_diff_p_fake_vs_fp32") is not None:
            notes.append(f"bf16 vs fp32 max |Δp_fake| on 4 images: {r['bf16']['max_abs_diff_p_fake_vs_fp32']:.2g}.")
        if "onnx_export_s" in r:
            notes.append(f"ONNX export (once, before timing): {r['onnx_export_s']:g} s; max |Δp_fake| vs torch "
                         f"{r['onnx_max_abs_diff_p_fake_vs_torch']:.2g}.")
        startup = [x["startup_s"] for e in r["runtimes"].values() for x in e["end_to_end"].values()]
        if startup:
            notes.append(f"CLI startup (imports + model load) {min(startup):.1f}–{max(startup):.1f} s.")
        lines += ["", " ".join(notes), ""]
    if data.get("rss_scaling"):
        rs = data["rss_scaling"]
        (n1, a), (n2, b) = list(rs["runs"].items())
        lines += [
            f"### Peak RSS vs number of images ({rs['model']}, {rs['runtime']}, --workers {rs['workers']}, "
            f"{rs['image_px']}×{rs['image_px']} JPEGs)",
            "",
            "| images | e2e img/s | peak RSS MB |",
            "|---:|---:|---:|",
            f"| {int(n1):,} | {_f(a['img_per_s'])}{_flag(a)} | {a['peak_rss_mb']:,.0f} |",
            f"| {int(n2):,} | {_f(b['img_per_s'])}{_flag(b)} | {b['peak_rss_mb']:,.0f} |",
            "",
            f"Ratio {rs['ratio']:.2f} {_check(rs['ratio'], TARGET_RSS_RATIO, higher_is_better=False)} "
            f"(target ≤ {TARGET_RSS_RATIO}).",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: Path, section: str, heading: str | None = None) -> None:
    """Replace the ``heading`` section of ``path`` (default: ``section``'s own first line; up to the
    next ``## `` heading), keeping the rest; append it when absent."""
    heading = heading or section.splitlines()[0].rstrip()
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    path.write_text(new, encoding="utf-8")


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
        data["max_other_cpu_seen"] = max(_other_cpu_values(data) or [0.0])
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
