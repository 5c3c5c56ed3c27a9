"""What every benchmark shares: the machine, timing on a shared machine, results on disk, BENCHMARKS.md.

- **The machine**: :func:`machine` (one line, for a table's caption) and :func:`machine_info`
  (CPU, flags, memory, thread settings, library versions, git commit), :func:`n_cpus`.
- **Timing**: :func:`cpu_meter` records a measurement's wall time and the share of the CPUs
  that *other* processes used meanwhile (from /proc/stat); :func:`measured` repeats a
  measurement that others disturbed and flags it if it stays disturbed.
- **Results**: :func:`read_results` / :func:`write_results` (``benchmarks/results/*.json``).
- **Markdown**: :func:`table` (a table's header and separator lines), :func:`row` (one row),
  :func:`update_markdown` (rewrite one ``## `` section of BENCHMARKS.md, keeping the others),
  :func:`replace_between` (rewrite the text between two marker lines, e.g. the README's
  headline table), :func:`publish` (a section written and printed).
- **Command lines**: :func:`subcommands` and :func:`run_subcommand` (``run`` / ``report`` /
  ... verbs), :func:`add_report` (the ``report`` verb every results benchmark has).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SHARED = ROOT.parent / "shared"  # ../shared beside the checkout: datasets and weights


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the machine


def n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> str:
    """``CPU model, N cores, OS, GPU`` in one line."""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, {gpu}"


def machine_info() -> dict:
    """The machine and software a timing ran on, for the results JSON and the section's caption."""
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
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip() + ("+dirty src" if dirty.stdout.strip() else "")
    except (ImportError, OSError):
        pass
    return info


# ----------------------------------------------------------------------------- timing


def busy_seconds() -> float:
    """CPU seconds spent busy (all CPUs, all processes) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def cpu_meter(record: dict):
    """Adds ``wall_s`` and ``other_cpu`` (share of all CPUs used by other processes) to ``record``."""
    try:
        busy0, own0 = busy_seconds(), own_seconds()
    except OSError:
        busy0 = own0 = None
    t0 = time.perf_counter()
    yield record
    wall = time.perf_counter() - t0
    record["wall_s"] = round(wall, 3)
    if busy0 is not None and wall > 0:
        other = (busy_seconds() - busy0) - (own_seconds() - own0)
        record["other_cpu"] = round(max(0.0, other) / (wall * n_cpus()), 3)


def measured(fn: Callable[[], dict], label: str, max_other_cpu: float = 0.10, retries: int = 1,
             pause: float = 10.0) -> dict:
    """Run ``fn() -> dict`` under the CPU meter; repeated (up to ``retries`` times, ``pause`` s apart)
    while other processes use more than ``max_other_cpu`` of the CPUs. Returns the least disturbed
    run, with ``attempts`` and ``disturbed``."""
    best = None
    for attempt in range(1 + max(0, retries)):
        record: dict = {}
        with cpu_meter(record):
            record.update(fn())
        record["attempts"] = attempt + 1
        if best is None or record.get("other_cpu", 0) < best.get("other_cpu", 0):
            best = {**record}
        if record.get("other_cpu", 0) <= max_other_cpu:
            break
        log(f"    {label}: other processes used {record['other_cpu']:.0%} of the CPUs; measuring again")
        time.sleep(pause)
    best["attempts"] = attempt + 1
    best["disturbed"] = best.get("other_cpu", 0) > max_other_cpu
    return best


def other_cpu_values(obj) -> list[float]:
    """Every ``other_cpu`` share recorded anywhere in a results structure."""
    if isinstance(obj, dict):
        own = [obj["other_cpu"]] if isinstance(obj.get("other_cpu"), (int, float)) else []
        return own + [v for x in obj.values() for v in other_cpu_values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in other_cpu_values(x)]
    return []


# ----------------------------------------------------------------------------- results


def read_results(path: Path) -> dict:
    """A results JSON, or ``{}`` when there is none yet."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(path: Path, results: dict, indent: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=indent) + "\n")


def write_manifest(rows: Iterable[dict], path: Path, generator: str | None = None) -> Path:
    """A CSV manifest ``path,label,generator`` of ``rows`` (``generator`` overrides every row's)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "generator"])
        for r in rows:
            w.writerow([r["path"], r["label"], generator or r["generator"]])
    return path


# ----------------------------------------------------------------------------- Markdown


def table(header: Sequence[str], align: str) -> list[str]:
    """A Markdown table's header and separator lines; ``align`` has one letter per column,
    ``l`` (``---``) or ``r`` (``---:``)."""
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns but {len(align)} alignments")
    return [row(header), "|" + "".join("---:|" if a == "r" else "---|" for a in align)]


def row(cells: Iterable) -> str:
    """One Markdown table row (an empty cell is ``| |``)."""
    return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)


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


def replace_between(markdown: Path, markers: tuple[str, str], body: str) -> None:
    """Rewrite the text between two marker lines of a markdown file (left alone without them)."""
    text = markdown.read_text() if markdown.exists() else ""
    start, end = text.find(markers[0]), text.find(markers[1])
    if start < 0 or end < start:
        return
    markdown.write_text(text[: start + len(markers[0])] + "\n" + body + "\n" + text[end:])


def publish(section: str, markdown: Path = BENCHMARKS_MD) -> str:
    """Write ``section`` into its place in BENCHMARKS.md and print it."""
    update_markdown(markdown, section)
    print(section)
    return section


# ----------------------------------------------------------------------------- command lines


def subcommands(doc: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A benchmark's parser (its docstring as the description) and its verbs."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="cmd", required=True)


def add_report(verbs: argparse._SubParsersAction, func: Callable[[argparse.Namespace], None],
               help: str = "write the BENCHMARKS.md section") -> argparse.ArgumentParser:
    p = verbs.add_parser("report", help=help)
    p.set_defaults(func=func)
    return p


def run_subcommand(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    args.func(args)


__all__ = ["BENCHMARKS_MD", "RESULTS", "ROOT", "SHARED", "add_report", "busy_seconds", "cpu_meter", "log", "machine",
           "machine_info", "measured", "n_cpus", "other_cpu_values", "own_seconds", "publish", "read_results",
           "replace_between", "row", "run_subcommand", "subcommands", "table", "update_markdown", "write_manifest", "write_results"]
