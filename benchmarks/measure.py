"""Timings in fresh processes, as ``aigi detect`` runs: the CLI end to end, a forward pass, a naive
``predict([path])`` loop, and decoding alone (threads or a process pool).

In-process numbers depend on what the benchmark process did before (see :func:`run_measure`),
so every timing runs in a child that loads the model as ``aigi detect`` does. :func:`run_cli`
runs the real CLI in a child that notes when :func:`aigi.inference.detect.detect` starts and
ends and reports its own peak RSS (``VmHWM``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .harness import ROOT


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
    code = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.measure import _measure_child; _measure_child(sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), json.dumps(cfg)], capture_output=True, text=True)
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


__all__ = ["run_cli", "run_measure", "time_decode", "time_decode_processes", "time_forward", "time_naive"]
