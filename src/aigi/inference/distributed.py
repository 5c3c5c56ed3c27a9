"""Score a large set of images on a Ray cluster with Ray Data.

    python -m aigi.inference.distributed MODEL PATH... --out DIR [--address auto] [--actors 4] [--format parquet]

The driver lists the inputs (files, folders walked recursively, zips, or remote URIs such as
``s3://bucket/prefix``), Ray Data reads the bytes (``read_binary_files``), a pool of actors
each holding one :class:`~aigi.detector.model.Detector` decodes and scores them in batches, and the
rows (the same fields as ``aigi detect``: :data:`aigi.inference.writers.RESULT_FIELDS`) are written as
Parquet or JSON Lines shards under ``out_dir``. There is exactly one row per input image: a
file that cannot be read or decoded gets a row with ``error`` set, it never fails the job.

How unreadable files are kept from failing the job: ``read_binary_files`` fails the whole
dataset on a file it cannot open, so local files are checked on the driver first (exists,
regular file, readable, under :data:`aigi.io.files.MAX_FILE_BYTES`); those that fail become error
rows that bypass the reader. ``ignore_missing_paths`` is *not* used: it would drop rows
silently. A file deleted or made unreadable between that check and its read still fails the
job (rerun it). Zip members are read by Ray tasks with :func:`aigi.io.files.read_bytes`, which
turns every failure into an error row. Remote URIs are listed and read by Ray itself.

The cluster needs: ``aigi`` installed on every node (the actors import it); local input paths
visible at the same absolute path on every node (a shared file system), or remote URIs; and
``out_dir`` on storage every node can write (shared file system or a bucket). The model does
not need to be on the workers: the driver ships its files through the object store.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..io.files import IMAGE_EXTENSIONS, MAX_FILE_BYTES, iter_inputs, read_bytes, too_large
from ..io.samples import ImageDecodeError, Sample
from .writers import RESULT_FIELDS, result_row

FORMATS = ("parquet", "jsonl")
_MISSING_RAY = "Ray is not installed: pip install 'aigi[ray]'"
_PRECHECK_CHUNK = 4096  # files stat()ed per round on the driver
_PRECHECK_THREADS = 16  # stat() is I/O bound (NFS); threads overlap the round trips


def _import_ray():
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(_MISSING_RAY) from None
    return ray


def _is_uri(path: str) -> bool:
    return "://" in path


def _printable(path: str) -> str:
    """A path as valid UTF-8 (Arrow strings must be): undecodable bytes shown as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _input_schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("bytes", pa.large_binary()), ("error", pa.string())])


def _result_schema():
    import pyarrow as pa

    types = {"p_fake": pa.float64(), "p_generator": pa.float64()}
    return pa.schema([(name, types.get(name, pa.string())) for name in RESULT_FIELDS])


# ----------------------------------------------------------------------------- listing


@dataclass
class InputPlan:
    """What the driver found under the input paths, grouped by how each is read."""

    files: list[str] = field(default_factory=list)  # readable local files, absolute paths
    members: list[tuple[str, str]] = field(default_factory=list)  # (absolute zip path, member name)
    uris: list[str] = field(default_factory=list)  # remote files/prefixes, listed by Ray
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): fail the pre-check

    @property
    def n_listed(self) -> int:
        """Images known before the run (URIs are listed later, by Ray)."""
        return len(self.files) + len(self.members) + len(self.errors)

    def __bool__(self) -> bool:
        return bool(self.files or self.members or self.uris or self.errors)


def precheck_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why ``read_binary_files`` would fail on (or we would refuse) a local file; None if fine.

    The reasons match :func:`aigi.io.files.read_bytes`, so error rows read the same as ``aigi detect``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found (or a broken link)"
    except PermissionError:
        return "permission denied"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if reason := too_large(st.st_size, max_bytes):
        return reason
    if not os.access(path, os.R_OK):
        return "permission denied"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (Ray cannot read it); rename it or use `aigi detect`"
    return None


def plan_inputs(paths: Iterable[str | os.PathLike]) -> InputPlan:
    """List every image under ``paths`` on the driver and sort it by how it will be read.

    Local paths are made absolute (Ray workers do not share the driver's working directory);
    folders are walked recursively and filtered by :data:`~aigi.io.files.IMAGE_EXTENSIONS`, zips
    are expanded to their image members, and a file named explicitly is always kept (a bad
    one gets an error row). URIs (``scheme://...``) are passed to Ray as they are.
    """
    plan = InputPlan()
    local: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if _is_uri(p):
            plan.uris.append(p)
        else:
            local.append(os.path.abspath(p))
    candidates: list[str] = []
    for sample in iter_inputs(local):
        if sample.archive:
            plan.members.append((sample.archive, sample.path))
        else:
            candidates.append(sample.path)
    with ThreadPoolExecutor(_PRECHECK_THREADS, thread_name_prefix="aigi-precheck") as pool:
        for start in range(0, len(candidates), _PRECHECK_CHUNK):
            chunk = candidates[start : start + _PRECHECK_CHUNK]
            for path, reason in zip(chunk, pool.map(precheck_file, chunk)):
                if reason is None:
                    plan.files.append(path)
                else:
                    plan.errors.append((_printable(path), reason))
    return plan


# ----------------------------------------------------------------------------- Ray stages


def _with_error_column(batch):
    """``read_binary_files`` rows (bytes, path) -> the scoring input schema (path, bytes, error)."""
    import pyarrow as pa

    n = batch.num_rows
    table = pa.table({"path": batch["path"], "bytes": batch["bytes"], "error": pa.array([""] * n, pa.string())})
    return table.cast(_input_schema())


def _read_zip_members(batch):
    """(archive, member) rows -> (path, bytes, error): a member that cannot be read gets ``error``."""
    import pyarrow as pa

    paths, datas, errors = [], [], []
    for archive, member in zip(batch["archive"].to_pylist(), batch["member"].to_pylist()):
        sample = Sample(member, member, archive=archive)
        paths.append(_printable(sample.display))
        try:
            datas.append(read_bytes(sample))
            errors.append("")
        except ImageDecodeError as e:
            datas.append(b"")
            errors.append(e.reason)
    return pa.table({"path": paths, "bytes": datas, "error": errors}, schema=_input_schema())


class _ScoreActor:
    """One detector per actor, loaded once; ``__call__`` scores a batch and never raises on a bad image."""

    def __init__(self, model_files, device: str = "cpu", num_threads: int | None = None, evidence: bool = True,
                 threshold: float | None = None, target_fpr: float | None = None) -> None:
        import ray
        import torch

        from ..detector.model import Detector

        if num_threads:
            torch.set_num_threads(num_threads)
        files = model_files[0] if isinstance(model_files, (tuple, list)) else model_files
        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        with tempfile.TemporaryDirectory(prefix="aigi-model-") as tmp:
            for name, data in files.items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            self.detector = Detector.from_pretrained(tmp, device=device)
        self.detector.eval()
        from ..detector.thresholds import apply_operating_point

        apply_operating_point(self.detector, threshold, target_fpr)
        self.evidence = evidence  # the file's metadata, read from the bytes Ray already holds

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        from ..detector.scoring import Prediction
        from ..forensics.evidence import load_with_evidence
        from ..io.inputs import ModelInput

        names = [str(p) for p in batch["path"]]
        rows: list[dict | None] = [None] * len(names)
        inputs: list[ModelInput] = []
        good: list[int] = []
        for i, (name, data, error) in enumerate(zip(names, batch["bytes"], batch["error"])):
            if error:
                rows[i] = result_row(Prediction(name, error=str(error)))
                continue
            try:
                data = b"" if data is None else bytes(data)
                if reason := too_large(len(data)):
                    raise ImageDecodeError(name, reason)
                inputs.append(load_with_evidence((name, data), self.detector.preprocessing, evidence=self.evidence))
                good.append(i)
            except ImageDecodeError as e:
                rows[i] = result_row(Prediction(name, error=e.reason))
            except Exception as e:  # never let one file end a run
                rows[i] = result_row(Prediction(name, error=f"cannot process ({type(e).__name__}: {e})"))
        for i, x, scores in zip(good, inputs, self.detector.score_inputs(inputs)):
            rows[i] = result_row(self.detector.make_prediction(x, scores))
        return pa.Table.from_pylist(rows, schema=_result_schema())


def _check_cpus(ray, actor_cpus: float, strict: bool) -> None:
    """Ray Data needs a CPU beside the actors for the read and write tasks, else it waits forever."""
    total = float(ray.cluster_resources().get("CPU", 0))
    if total - actor_cpus >= 1:
        return
    msg = (
        f"the scoring actors take {actor_cpus:g} of the cluster's {total:g} CPUs; Ray Data needs at "
        "least 1 more for reading and writing, or the job waits forever: use fewer actors or "
        "fewer CPUs per actor"
    )
    if strict:  # a local instance we started cannot grow
        raise ValueError(msg)
    warnings.warn(msg + " (going on: an autoscaling cluster may add nodes)", RuntimeWarning, stacklevel=3)


def _model_files(model: str) -> dict[str, bytes]:
    """The files of a saved detector, read on the driver (fails early, and clearly, if missing)."""
    from ..detector.registry import CONFIG_NAME, WEIGHTS_NAME, resolve_model_path

    path = resolve_model_path(model)
    files = {}
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(path / name, "rb") as f:
            files[name] = f.read()
    return files


def _build_dataset(ray, plan: InputPlan):
    """One dataset of (path, bytes, error) rows over every input in ``plan``."""
    import pyarrow as pa

    parts = []
    if plan.files:
        ds = ray.data.read_binary_files(plan.files, include_paths=True)
        parts.append(ds.map_batches(_with_error_column, batch_format="pyarrow"))
    by_scheme: dict[str, list[str]] = defaultdict(list)
    for uri in plan.uris:
        by_scheme[uri.split("://", 1)[0].lower()].append(uri)
    extensions = sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    for uris in by_scheme.values():
        ds = ray.data.read_binary_files(uris, include_paths=True, file_extensions=extensions)
        parts.append(ds.map_batches(_with_error_column, batch_format="pyarrow"))
    if plan.members:
        items = [{"archive": a, "member": m} for a, m in plan.members]
        parts.append(ray.data.from_items(items).map_batches(_read_zip_members, batch_format="pyarrow"))
    if plan.errors:
        paths, reasons = zip(*plan.errors)
        table = pa.table(
            {"path": list(paths), "bytes": [b""] * len(paths), "error": list(reasons)}, schema=_input_schema()
        )
        parts.append(ray.data.from_arrow(table))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------- output


def _out_filesystem(out_dir: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(out_dir)


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse to mix this run's shards with earlier files (the summary counts what is there)."""
    import pyarrow.fs

    fs, path = _out_filesystem(out_dir)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.File:
        raise FileExistsError(f"{out_dir} is a file; --out names a folder for the result shards")
    if overwrite or info.type == pyarrow.fs.FileType.NotFound:
        return
    if fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)):
        raise FileExistsError(f"{out_dir} is not empty; choose a new folder or pass overwrite=True (--overwrite)")


def _clear_out_dir(out_dir: str) -> None:
    import pyarrow.fs

    fs, path = _out_filesystem(out_dir)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir_contents(path)


def _jsonl_names() -> dict:
    """``write_json`` keyword arguments naming shards ``*.jsonl`` where this Ray version can."""
    try:
        from ray.data.datasource import FilenameProvider

        return {"filename_provider": FilenameProvider(file_format="jsonl")}
    except (ImportError, TypeError):  # older Ray: FilenameProvider() takes no file_format; keep *.json
        return {}


def _count_results(out_dir: str, output_format: str) -> tuple[int, int, int]:
    """(rows, rows with an error, rows judged AI-generated) in the shards under ``out_dir``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    fs, path = _out_filesystem(out_dir)
    fmt = "parquet" if output_format == "parquet" else "json"
    table = pds.dataset(path, filesystem=fs, format=fmt).to_table(columns=["error", "verdict"])
    if table.num_rows == 0:
        return 0, 0, 0
    n_errors = pc.sum(pc.greater(pc.utf8_length(pc.fill_null(table["error"].cast("string"), "")), 0)).as_py()
    n_fake = pc.sum(pc.equal(pc.fill_null(table["verdict"].cast("string"), ""), "ai-generated")).as_py()
    return table.num_rows, int(n_errors or 0), int(n_fake or 0)


# ----------------------------------------------------------------------------- entry points


def detect_ray(
    model: str,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    batch_size: int = 64,
    num_actors: int = 1,
    num_cpus_per_actor: float = 1,
    output_format: str = "parquet",
    address: str | None = None,
    num_gpus_per_actor: float = 0,
    overwrite: bool = False,
    evidence: bool = True,
    threshold: float | None = None,
    target_fpr: float | None = None,
) -> dict:
    """Score every image under ``paths`` on Ray and write result shards under ``out_dir``.

    ``model``: a checkpoint directory or a registered name, read on the driver and shipped to
    the actors. ``paths``: files, folders (recursive), zips, or remote URIs (``s3://...``).
    ``num_actors`` actors, each with ``num_cpus_per_actor`` CPUs (torch threads) and
    ``num_gpus_per_actor`` GPUs (> 0 scores on CUDA), score ``batch_size`` images per forward
    pass. ``output_format``: ``parquet`` or ``jsonl`` (JSON Lines, one object per row).
    ``address``: None starts a local Ray instance (or joins ``$RAY_ADDRESS``), ``"auto"``
    joins the cluster this machine belongs to, ``"ray://head:10001"`` connects a client. When
    Ray is already initialised that connection is used; when this call started Ray it shuts
    it down at the end. ``out_dir`` must be empty or new unless ``overwrite``.

    Returns ``{"n_images", "n_errors", "n_fake", "out_dir", "format"}``, counted from the
    shards written. ``evidence``: read each file's metadata (the ``evidence`` column, and the
    verdict follows :func:`aigi.forensics.verdict.combine`); ``threshold`` / ``target_fpr``: as
    ``aigi detect --threshold / --target-fpr``.
    """
    if output_format not in FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    if batch_size < 1 or num_actors < 1 or num_cpus_per_actor < 0 or num_gpus_per_actor < 0:
        raise ValueError("batch_size and num_actors must be >= 1; CPUs and GPUs per actor >= 0")
    ray = _import_ray()
    paths = list(paths)
    out_dir = os.fspath(out_dir)
    if not _is_uri(out_dir):
        out_dir = os.path.abspath(out_dir)  # workers write it; their working directory differs
    _check_out_dir(out_dir, overwrite)
    model_files = _model_files(model)
    if threshold is not None or target_fpr is not None:  # a model without held-out scores fails here, not in an actor
        from ..detector.thresholds import choose_threshold

        choose_threshold(json.loads(model_files["config.json"]), threshold, target_fpr, model)
    plan = plan_inputs(paths)
    if not plan:
        raise ValueError("no images found under: " + ", ".join(map(os.fspath, paths)))

    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    try:
        local = started and address is None and not os.environ.get("RAY_ADDRESS")
        _check_cpus(ray, num_actors * num_cpus_per_actor, strict=local)
        from ray.data import ActorPoolStrategy

        model_ref = ray.put(model_files)
        del model_files
        scored = _build_dataset(ray, plan).map_batches(
            _ScoreActor,
            fn_constructor_kwargs={
                # In a tuple, so that Ray hands the actor the reference rather than a copy.
                "model_files": (model_ref,),
                "device": "cuda" if num_gpus_per_actor > 0 else "cpu",
                "num_threads": max(1, int(num_cpus_per_actor)),
                "evidence": evidence, "threshold": threshold, "target_fpr": target_fpr,
            },
            compute=ActorPoolStrategy(size=num_actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=num_cpus_per_actor,
            num_gpus=num_gpus_per_actor or None,
        )
        if overwrite:
            _clear_out_dir(out_dir)
        if output_format == "parquet":
            scored.write_parquet(out_dir)
        else:
            scored.write_json(out_dir, **_jsonl_names())
        del model_ref
    finally:
        if started:
            ray.shutdown()
    n_images, n_errors, n_fake = _count_results(out_dir, output_format)
    return {"n_images": n_images, "n_errors": n_errors, "n_fake": n_fake, "out_dir": out_dir, "format": output_format}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m aigi.inference.distributed",
        description="Score images on a Ray cluster (Ray Data); writes Parquet or JSON Lines shards.",
    )
    p.add_argument("model", help="checkpoint directory or registered model name (e.g. default)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive), zips, or s3://... URIs")
    p.add_argument("--out", required=True, help="output folder (local, shared by all nodes, or a bucket URI)")
    p.add_argument("--address", default=None, help="Ray address: auto, ray://HEAD:10001 (default: start a local Ray)")
    p.add_argument("--actors", type=int, default=1, help="scoring actors (default %(default)s)")
    p.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs per actor (default %(default)s)")
    p.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per actor; > 0 scores on CUDA (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="shard format (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    args = p.parse_args(argv)
    try:
        summary = detect_ray(
            args.model, args.paths, args.out, batch_size=args.batch_size, num_actors=args.actors,
            num_cpus_per_actor=args.cpus_per_actor, output_format=args.format, address=args.address,
            num_gpus_per_actor=args.gpus_per_actor, overwrite=args.overwrite,
        )
    except (ImportError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"aigi: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


__all__ = ["FORMATS", "InputPlan", "detect_ray", "main", "plan_inputs", "precheck_file"]


if __name__ == "__main__":
    sys.exit(main())
