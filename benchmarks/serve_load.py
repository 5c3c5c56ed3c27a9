"""Load on ``aigi serve``: many concurrent clients on loopback, beside ``aigi detect`` on the same images.

    python -m benchmarks.serve_load                       # 16 clients, 400 requests, 1 and 2 server processes
    python -m benchmarks.serve_load --update-md           # also rewrite "## Serve load" in BENCHMARKS.md
    python -m benchmarks.serve_load --fuzz-cases 5000     # also a long fuzz campaign (tests/serve/test_serve_fuzz.py)

What is measured, in one run:

- **aigi detect**: ``aigi detect FOLDER --out results.jsonl -q`` in a subprocess on the
  generated JPEGs (the bundled default model, its default decode threads and batch size);
  images / time from the first to the last prediction, as in ``benchmarks.throughput``.
- **aigi serve**: ``aigi serve --port P [--workers W]`` in a subprocess. After a warm-up,
  ``--clients`` keep-alive connections send ``--requests`` ``POST /v1/detect`` requests in
  all, one image each (multipart), as fast as answers come back. req/s = requests / wall
  time of the load; latency per request from the first byte sent to the last byte read;
  answers counted by status (and by transport error); a 200 whose result has an ``error`` is
  counted as a failed result. Server peak RSS: ``VmHWM`` of every server process, summed.
- The mean batch size the dynamic batcher reached: images scored / forward passes, from
  ``/v1/health`` of every worker process.

The load client is a small asyncio loop over raw sockets, so that it takes little of the CPU
it shares with the server. Other processes distort timings: every measurement records the
share of all CPUs used by processes other than this one and the server (from /proc), and it
is printed and written with the results.

Images: ``--requests`` synthetic photo-like JPEGs (``benchmarks.photos.synthetic_photo``),
sides drawn from 512 to 1024 px, quality 90, seeded; one distinct file per request.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .harness import busy_seconds, cpu_meter, log, machine_info, n_cpus, row, table, update_markdown, write_results
from .measure import run_cli
from .photos import synthetic_photo

SECTION = "## Serve load"
TARGET_VS_DETECT = 0.7
TARGET_RSS_GROWTH = 0.2  # peak RSS under load vs RSS after warm-up
BOUNDARY = "aigiLoadBoundary"


# ----------------------------------------------------------------------------- images and requests


def make_images(folder: Path, n: int, min_px: int, max_px: int, seed: int) -> list[Path]:
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    sides = np.random.default_rng(seed).integers(min_px, max_px + 1, n)
    paths = [folder / f"img_{i:05d}.jpg" for i in range(n)]

    def make(i: int) -> None:
        if not paths[i].exists():
            im = synthetic_photo(np.random.default_rng([seed, i]), int(sides[i]))
            if i % 3 == 1:  # some landscape, some portrait
                im = im.resize((int(sides[i]), int(sides[i]) * 3 // 4))
            elif i % 3 == 2:
                im = im.resize((int(sides[i]) * 3 // 4, int(sides[i])))
            im.save(paths[i], "JPEG", quality=90)

    with ThreadPoolExecutor(max(1, n_cpus())) as pool:
        list(pool.map(make, range(n)))
    return paths


def request_bytes(path: Path, host: str) -> bytes:
    data = path.read_bytes()
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


# ----------------------------------------------------------------------------- the server


def _proc_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` summed over a process and its descendants."""
    return round(sum(_status_kb(p, field) for p in _proc_tree(pid)) / 1024, 1)


def tree_cpu_s(pid: int) -> float:
    total = 0
    for p in _proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers: int, extra: list[str], log_path: Path) -> tuple[subprocess.Popen, int]:
    import urllib.request

    port = free_port()
    cmd = [sys.executable, "-m", "aigi.cli", "serve", "--port", str(port), "--workers", str(workers), *extra]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(cmd)} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def batching_stats(port: int, workers: int) -> dict:
    """Images scored and forward passes, summed over the worker processes that answer /v1/health."""
    import urllib.request

    per_pid: dict[int, dict] = {}
    for _ in range(20 * workers):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
            h = json.load(r)
        per_pid[h["pid"]] = h
        if len(per_pid) == workers:
            break
    batches = sum(h["batches"] for h in per_pid.values())
    images = sum(h["images_scored"] for h in per_pid.values())
    return {"processes_seen": len(per_pid), "forward_passes": batches, "images_scored": images,
            "mean_batch": round(images / batches, 2) if batches else None}


# ----------------------------------------------------------------------------- the load


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close", body


async def drive(port: int, requests: list[bytes], clients: int) -> dict:
    """``clients`` keep-alive connections sending every request once; latencies and statuses."""
    queue = iter(range(len(requests)))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failed_results = 0

    async def client() -> None:
        nonlocal failed_results
        reader = writer = None
        for i in queue:
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(requests[i])
                await writer.drain()
                status, close, body = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                statuses[f"transport error ({type(e).__name__})"] = statuses.get(f"transport error ({type(e).__name__})", 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200 and b'"error":""' not in body:
                failed_results += 1
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(requests), "clients": clients, "wall_s": round(wall, 3),
            "req_per_s": round(len(requests) / wall, 2), "statuses": dict(sorted(statuses.items())),
            "failed_results": failed_results,
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p90": round(float(np.percentile(lat, 90)), 1),
                           "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)}
            if len(lat) else None}


def measure_serve(workers: int, requests: list[bytes], args: argparse.Namespace, tmp: Path) -> dict:
    extra = shlex.split(args.serve_args)
    proc, port = start_server(workers, extra, tmp / f"serve-w{workers}.log")
    try:
        asyncio.run(drive(port, requests[: args.warmup], min(args.clients, args.warmup)))  # warm-up
        rss_warm = tree_memory_mb(proc.pid, "VmRSS")
        busy0, own0, server0 = busy_seconds(), _own_cpu_s(), tree_cpu_s(proc.pid)
        result = asyncio.run(drive(port, requests, args.clients))
        busy1, own1, server1 = busy_seconds(), _own_cpu_s(), tree_cpu_s(proc.pid)
        other = (busy1 - busy0) - (own1 - own0) - (server1 - server0)
        result.update({
            "server": "aigi serve " + " ".join(shlex.quote(a) for a in ["--workers", str(workers), *extra]),
            "workers": workers,
            "img_per_s": result["req_per_s"],  # one image per request
            "server_cpu_s": round(server1 - server0, 2),
            "client_cpu_s": round(own1 - own0, 2),
            "other_cpu": round(max(0.0, other) / (result["wall_s"] * n_cpus()), 3),
            "rss_after_warmup_mb": rss_warm,
            "rss_end_mb": tree_memory_mb(proc.pid, "VmRSS"),
            "peak_rss_mb": tree_memory_mb(proc.pid, "VmHWM"),
            "batching": batching_stats(port, workers),
            "server_alive": proc.poll() is None,
        })
        n_5xx = sum(n for s, n in result["statuses"].items() if s.startswith("5"))
        result["n_5xx"] = n_5xx
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def measure_detect(folder: Path, tmp: Path) -> dict:
    from aigi.detector.registry import BUNDLED_MODELS_DIR
    from aigi.io.decode import DECODE_WORKERS

    meter: dict = {}
    with cpu_meter(meter):
        result = run_cli(folder, BUNDLED_MODELS_DIR / "default", tmp / "detect", DECODE_WORKERS, 32, "torch")
    # The child's run_s is its scoring time; the meter spans its whole life (startup included).
    result["other_cpu"] = meter["other_cpu"]
    return result


# ----------------------------------------------------------------------------- report


def _check(ok: bool) -> str:
    return "✅" if ok else "❌"


def render_section(data: dict) -> str:
    m = data["machine"]
    detect = data["detect"]
    s = data["settings"]
    lines = [
        SECTION, "",
        f"Measured {data['date']} with `{data['command']}` on {m['cores']} CPU cores ({m['cpu']}), no GPU; "
        f"torch {m['torch']} ({m['torch_threads']} threads), Pillow {m.get('PIL')}; aigi {m.get('aigi')} "
        f"({m.get('git_commit', '?')}). Raw numbers: `benchmarks/results/serve_load.json`.",
        "",
        f"- {s['requests']} requests from {s['clients']} concurrent keep-alive clients on loopback, each `POST /v1/detect` "
        f"with one synthetic photo-like JPEG ({s['min_px']}–{s['max_px']} px sides, quality 90, one distinct file per "
        f"request, {data['images_mb']:.0f} MB in all), after {s['warmup']} warm-up requests; the bundled default model. "
        "The client is an asyncio loop over raw sockets on the same cores as the server.",
        "- **aigi detect** scored the same files in the same run: `aigi detect FOLDER --out results.jsonl -q` "
        f"(decode threads {detect['cli'].split('--workers ')[1].split()[0]}, batch 32); img/s from its first to its last "
        "prediction (startup excluded), as in the Throughput section.",
        "- Threads: `aigi detect` decodes in its default threads and computes with torch's default "
        f"({m['torch_threads']}); `aigi serve` uses its defaults per process: "
        + ", ".join(f"--workers {w}: {t['decode']} decoding + {t['compute']} compute"
                    for w, t in data.get("serve_threads", {}).items()) + ".",
        "- Latency: from the first byte of a request sent to the last byte of its answer. Peak RSS: `VmHWM` of every "
        "server process, summed. Mean batch: images per forward pass reached by the dynamic batcher.",
        "- **other CPU**: share of all CPUs used by processes other than the benchmark and the server while it ran; "
        "above 10% the figures are slower than this machine can do alone.",
        "",
        *table(["run", "img/s", "vs aigi detect", "p50 ms", "p99 ms", "answers", "5xx", "mean batch",
                "peak RSS MB (after warm-up)", "other CPU"], "lrrrrlrrrr"),
        row(["`aigi detect FOLDER --out results.jsonl -q`", f"{detect['img_per_s']:.1f}", "1.00", "", "",
             f"{detect['images']} rows", "", 32, f"{detect['peak_rss_mb']:.0f}", f"{detect['other_cpu']:.0%}"]),
    ]
    for r in data["serve"]:
        answers = ", ".join(f"{n} × {k}" for k, n in r["statuses"].items())
        if r["failed_results"]:
            answers += f"; {r['failed_results']} results with errors"
        lines.append(row([
            f"`{r['server']}`", f"{r['img_per_s']:.1f}",
            f"{r['img_per_s'] / detect['img_per_s']:.2f} {_check(r['img_per_s'] >= TARGET_VS_DETECT * detect['img_per_s'])}",
            f"{r['latency_ms']['p50']:.0f}", f"{r['latency_ms']['p99']:.0f}", answers,
            f"{r['n_5xx']} {_check(r['n_5xx'] == 0)}", r["batching"]["mean_batch"],
            f"{r['peak_rss_mb']:.0f} ({r['rss_after_warmup_mb']:.0f}) "
            f"{_check(r['peak_rss_mb'] <= (1 + TARGET_RSS_GROWTH) * r['rss_after_warmup_mb'])}", f"{r['other_cpu']:.0%}"]))
    lines += [
        "",
        f"Targets: no 5xx; at least {TARGET_VS_DETECT:.0%} of `aigi detect`'s img/s; peak RSS at most "
        f"{1 + TARGET_RSS_GROWTH:.1f}× the RSS after warm-up (memory bounded under load).",
    ]
    shares = [detect["other_cpu"], *(r["other_cpu"] for r in data["serve"])]
    if max(shares) > 0.1:
        lines += ["", f"**The machine was shared**: other processes used {min(shares):.0%}–{max(shares):.0%} of the CPUs "
                      "during these measurements, so every figure here is lower than the machine gives alone, and a "
                      "ratio is only as fair as the two rows' other-CPU shares are alike."]
    if data.get("fuzz"):
        f = data["fuzz"]
        lines += ["", f"Fuzz campaign in the same run (`AIGI_FUZZ_CASES={f['cases']} pytest tests/serve/test_serve_fuzz.py`): "
                      f"{f['summary']} ({f['wall_s']:.0f} s)."]
    if data.get("note"):
        lines += ["", data["note"]]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent connections (default %(default)s)")
    p.add_argument("--requests", type=int, default=400, help="requests (and distinct images) in all (default %(default)s)")
    p.add_argument("--warmup", type=int, default=32, help="requests before timing (default %(default)s)")
    p.add_argument("--min-px", type=int, default=512)
    p.add_argument("--max-px", type=int, default=1024)
    p.add_argument("--server-workers", default="1,2", help="aigi serve --workers values to run (default %(default)s)")
    p.add_argument("--serve-args", default="", help="more aigi serve flags, e.g. '--max-batch 16'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuzz-cases", type=int, default=0,
                   help="also run tests/test_serve_fuzz.py with this many cases (AIGI_FUZZ_CASES)")
    p.add_argument("--note", default="", help="a line added under the table (what else ran on the machine)")
    p.add_argument("--tmp", help="work folder (default: a new temporary folder, removed afterwards)")
    p.add_argument("--out", default="benchmarks/results/serve_load.json")
    p.add_argument("--update-md", action="store_true", help="rewrite the '## Serve load' section of --md")
    p.add_argument("--md", default="BENCHMARKS.md")
    p.add_argument("--render", metavar="JSON", help="measure nothing: print (and with --update-md write) a saved run")
    args = p.parse_args(argv)
    args.server_workers = [int(w) for w in args.server_workers.split(",") if w.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text(encoding="utf-8"))
    else:
        command = "python -m benchmarks.serve_load " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        tmp_ctx = tempfile.TemporaryDirectory(prefix="aigi-serve-load-") if not args.tmp else None
        tmp = Path(args.tmp or tmp_ctx.name)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            data = {"benchmark": "serve_load", "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": command.strip(), "machine": machine_info(),
                    "settings": {k: v for k, v in vars(args).items() if k not in ("tmp", "update_md", "md", "render", "out")},
                    "note": args.note}
            log(f"machine: {data['machine']['cpu']}, {data['machine']['cores']} cores; work folder {tmp}")
            t0 = time.perf_counter()
            images = make_images(tmp / "images", args.requests, args.min_px, args.max_px, args.seed)
            data["images_mb"] = sum(p.stat().st_size for p in images) / 2**20
            log(f"{len(images)} JPEGs ({data['images_mb']:.0f} MB) in {time.perf_counter() - t0:.0f} s")
            log("aigi detect on the same files")
            data["detect"] = measure_detect(tmp / "images", tmp)
            log(f"  {data['detect']['img_per_s']:.1f} img/s (other CPU {data['detect']['other_cpu']:.0%})")
            from aigi.serve.run import share_cores

            data["serve_threads"] = {str(w): dict(zip(("decode", "compute"), share_cores(w))) for w in args.server_workers}
            requests = [request_bytes(p, "127.0.0.1") for p in images]
            data["serve"] = []
            for workers in args.server_workers:
                log(f"aigi serve --workers {workers}: {args.clients} clients, {args.requests} requests")
                r = measure_serve(workers, requests, args, tmp)
                data["serve"].append(r)
                log(f"  {r['req_per_s']:.1f} req/s, p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, "
                    f"{r['statuses']}, mean batch {r['batching']['mean_batch']}, peak RSS {r['peak_rss_mb']} MB, "
                    f"other CPU {r['other_cpu']:.0%}")
            if args.fuzz_cases:
                log(f"fuzz campaign: {args.fuzz_cases} cases")
                env = {**os.environ, "AIGI_FUZZ_CASES": str(args.fuzz_cases)}
                t1 = time.perf_counter()
                fuzz = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/serve/test_serve_fuzz.py"], env=env,
                                      capture_output=True, text=True)
                data["fuzz"] = {"cases": args.fuzz_cases, "returncode": fuzz.returncode,
                                "summary": (fuzz.stdout.strip().splitlines() or [""])[-1],
                                "wall_s": round(time.perf_counter() - t1, 1)}
                log(f"  {data['fuzz']['summary']}")
        finally:
            if tmp_ctx is not None:
                tmp_ctx.cleanup()
        out = Path(args.out)
        write_results(out, data, indent=2)
        log(f"raw results: {out}")
    section = render_section(data)
    print(section)
    if args.update_md:
        update_markdown(Path(args.md), section, SECTION)
        log(f"updated the '{SECTION}' section of {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
