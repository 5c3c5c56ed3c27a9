"""``aigi serve``: a detector behind a web page and an HTTP API (one process or ``--workers N``)."""

from __future__ import annotations

import argparse
import os
import sys

from .common import (VERDICTS_HELP, add_crops_arg, add_decision_args, add_device_arg, add_model_arg, add_runtime_arg,
                     check_device, fail, load_detector)


def _check_model_loads(args: argparse.Namespace) -> None:
    """With --workers N each worker loads the model; load it once first in a short-lived child, so
    that a bad model fails now with its reason (not in N restarting workers), an ONNX export
    happens once, and the supervisor process does not keep a copy of the model in memory."""
    import subprocess

    # The threshold too: a --target-fpr the model cannot give fails here, not in N workers.
    code = ("import sys; from aigi.inference.runtime import load_runtime; "
            "from aigi.detector.thresholds import apply_operating_point\n"
            "try:\n"
            "    d = load_runtime(sys.argv[1], runtime=sys.argv[2], device=sys.argv[3])\n"
            "    apply_operating_point(d, *(float(a) if a else None for a in sys.argv[4:6]), 'model ' + sys.argv[1])\n"
            "except (FileNotFoundError, ValueError, OSError, ImportError, RuntimeError) as e: sys.exit(str(e))")
    point = ["" if v is None else repr(v) for v in (args.threshold, args.target_fpr)]
    child = subprocess.run([sys.executable, "-c", code, str(args.model), args.runtime, args.device, *point],
                           capture_output=True, text=True)
    if child.returncode:
        fail(f"aigi: cannot load model: {(child.stderr.strip().splitlines() or ['(no message)'])[-1]}")


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
    from ..serve.access import load_api_keys
    from ..serve.options import ServeOptions
    from ..serve.run import serve, serve_workers, set_compute_threads, share_cores

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
        evidence=not args.no_evidence, crops=args.crops)
    if options.max_request_bytes < options.max_bytes:
        sys.exit(f"aigi serve: --max-request-mb {args.max_request_mb:g} is below --max-mb {args.max_mb:g}")
    if args.workers == 1:
        if args.runtime == "torch":
            set_compute_threads(threads, explicit=args.threads is not None)
        detector = load_detector(args.model, args.device, args.runtime, spinning=False, threads=threads, args=args)
    else:
        check_device(args.device, args.runtime)
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


def add_parser(verbs) -> None:
    p = verbs.add_parser("serve", help="serve a detector over HTTP: a web page and an API",
                         description="A web page at / and an API: POST images to /v1/detect (FastAPI + uvicorn).")
    add_model_arg(p, onnx=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default %(default)s)")
    add_crops_arg(p)
    add_device_arg(p)
    add_runtime_arg(p)
    add_decision_args(p)
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


__all__ = ["add_parser", "cmd_serve"]
