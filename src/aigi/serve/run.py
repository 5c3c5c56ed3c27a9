"""Running the app: uvicorn in this process (:func:`serve`), or ``--workers N`` processes behind one
port (:func:`serve_workers`, each building its app with :func:`app_from_env`), and how the CPU
cores are shared between decoding threads and the model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Any, Optional

from .access import load_api_keys
from .app import create_app
from .options import MAX_FILES_PER_REQUEST, ServeOptions

ENV_CONFIG = "AIGI_SERVE_CONFIG"


def _log_config() -> dict:
    import uvicorn.config

    config = json.loads(json.dumps(uvicorn.config.LOGGING_CONFIG))
    config["loggers"]["aigi.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _uvicorn_defaults(options: dict) -> dict:
    # Our access log (with request IDs) replaces uvicorn's; no "server: uvicorn" banner.
    return {"access_log": False, "log_config": _log_config(), "server_header": False, **options}


def share_cores(workers: int = 1, decode_threads: Optional[int] = None, threads: Optional[int] = None) -> tuple:
    """(decoding threads, compute threads) of each of ``workers`` processes. The cores are split
    between the processes; within one, the decoders get half and the model the rest. The model
    is not given every core: a forward pass whose threads share cores with the decoders and the
    event loop costs up to twice the CPU time per image (measured: BENCHMARKS.md, Serve load)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_worker = max(1, cores // max(1, workers))
    decode = decode_threads or max(1, per_worker // 2)
    return decode, threads or max(1, per_worker - decode)


def set_compute_threads(threads: int, explicit: bool = False) -> None:
    """torch's intra-op threads for this process; an OMP_NUM_THREADS the user exported wins
    unless ``threads`` was asked for explicitly (--threads)."""
    if explicit or "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)


def serve(detector: Any, model_name: str = "default", host: str = "127.0.0.1", port: int = 8000,
          max_files: int = MAX_FILES_PER_REQUEST, options: Optional[ServeOptions] = None, **uvicorn_options) -> None:
    """Serve a loaded detector with uvicorn, in this process, until interrupted."""
    import uvicorn

    app = create_app(detector, model_name, replace(options or ServeOptions(), max_files=max_files))
    uvicorn.run(app, host=host, port=port, **_uvicorn_defaults(uvicorn_options))


def serve_workers(model: str, workers: int, host: str = "127.0.0.1", port: int = 8000, runtime: str = "torch",
                  device: str = "cpu", options: Optional[ServeOptions] = None, api_key_file: Optional[str] = None,
                  threads: Optional[int] = None, threshold: Optional[float] = None,
                  target_fpr: Optional[float] = None, **uvicorn_options) -> None:
    """``workers`` processes behind one port (uvicorn's supervisor); each loads its own model
    through :func:`app_from_env`, with ``threads`` compute threads (default: see :func:`share_cores`)."""
    import uvicorn

    opts = options or ServeOptions()
    options_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items() if k != "api_keys"}
    os.environ[ENV_CONFIG] = json.dumps({
        "model": model, "runtime": runtime, "device": device, "api_key_file": api_key_file, "options": options_dict,
        "threads": threads or share_cores(workers, opts.decode_threads)[1], "explicit_threads": threads is not None,
        "threshold": threshold, "target_fpr": target_fpr})
    uvicorn.run("aigi.serve.run:app_from_env", factory=True, workers=workers, host=host, port=port,
                **_uvicorn_defaults(uvicorn_options))


def app_from_env():
    """The app of one ``--workers`` process, from the settings :func:`serve_workers` left in the environment."""
    from ..detector.thresholds import apply_operating_point
    from ..inference.runtime import load_runtime

    config = json.loads(os.environ[ENV_CONFIG])
    if config["runtime"] == "torch":
        set_compute_threads(config["threads"], config["explicit_threads"])
    detector = load_runtime(config["model"], runtime=config["runtime"], device=config["device"],
                            threads=config["threads"], spinning=False)
    apply_operating_point(detector, config.get("threshold"), config.get("target_fpr"), str(config["model"]))
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config["options"].items()}
    if config.get("api_key_file"):
        options["api_keys"] = load_api_keys(config["api_key_file"])
    return create_app(detector, str(config["model"]), ServeOptions(**options))


__all__ = ["ENV_CONFIG", "app_from_env", "serve", "serve_workers", "set_compute_threads", "share_cores"]
