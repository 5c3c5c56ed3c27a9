"""``aigi serve``: a detector behind a web page and a versioned HTTP API (``pip install 'aigi[serve]'``).

    aigi serve                                   # the bundled model on http://127.0.0.1:8000
    curl -F files=@photo.jpg -F files=@art.webp http://127.0.0.1:8000/v1/detect
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/v1/detect

- ``/``: a page to drop images on and see their verdicts (``aigi/serve/web/``, no CDN).
- ``POST /v1/detect``: multipart ``files`` (one or more) or one raw image body. Returns
  :class:`DetectResponse`, one result per file in upload order; a file that cannot be
  scored gets ``error`` and the others are still scored, as in ``aigi detect``.
- ``GET /v1/health``, ``GET /v1/models``; ``/detect`` and ``/health`` are aliases.
- ``/docs`` (Swagger UI) and ``/redoc`` from the files fastapi-offline ships: no CDN.
- Errors are ``{"error": {"code", "message", "request_id"}}`` with the HTTP status.

Uploads are read into memory under a byte limit and a deadline and never written to disk
(:mod:`aigi.io.uploads`), turned into model input in a small thread pool by the same function
as files on disk (:mod:`aigi.serve.handling`: the pixel limit on the header before any
pixel, orientation, the same crops), and the images of concurrent requests are scored
together (:mod:`aigi.inference.batcher`). Every call into the model goes through
:func:`~aigi.serve.handling.predict_images`. Running it: :mod:`aigi.serve.run`.
"""

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations
# at run time.
import asyncio
import hmac
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..detector.scoring import decide
from ..inference.batcher import DynamicBatcher, Overloaded
from ..io.decode import MAX_IMAGE_PIXELS
from ..io.uploads import RequestError, check_content_length, megabytes, read_uploads
from .access import RateLimiter, key_digest
from .handling import decode_or_error, over_pixel_limit, predict_images, request_point
from .options import ServeOptions
from .schemas import ERROR_RESPONSES, DetectResponse, ErrorResponse, Health, ModelInfo, ModelsResponse, Result

WEB_DIR = Path(__file__).parent / "web"
log = logging.getLogger("aigi.serve")


# ----------------------------------------------------------------------------- request context

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_response(status: int, code: str, message: str, request_id: str = "", headers: Optional[dict] = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message, "request_id": request_id}}, status,
                        headers=headers)


class RequestContext:
    """Pure ASGI middleware: a request ID (the client's ``X-Request-ID`` when sane, else a new
    one) echoed on every response and logged, one access-log line per request, and a JSON 500
    (never a traceback) for anything unexpected."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 0
        t0 = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode()),
                                                  (b"x-content-type-options", b"nosniff")]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed", rid)
            if not status:
                await error_response(500, "internal", "internal server error; the request ID is in the server log",
                                     rid)(scope, receive, send_with_id)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info('%s:%s "%s %s" %s %.1fms request_id=%s', client[0], client[1], scope["method"], scope["path"],
                     status or "-", 1000 * (time.perf_counter() - t0), rid)


# ----------------------------------------------------------------------------- the app


DETECT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "one or more images"}}}},
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in
           ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/heic", "image/heif",
            "image/avif", "application/octet-stream")},
    },
}


def create_app(detector: Any, model_name: str = "default", options: Optional[ServeOptions] = None, **overrides):
    """A FastAPI app serving ``detector`` (a torch ``Detector`` or an ``OnnxDetector``).
    ``overrides`` are :class:`ServeOptions` fields (``max_files=4``, ``max_bytes=...``)."""
    from fastapi import Depends, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse
    from fastapi.security import APIKeyHeader, HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    opts = replace(options or ServeOptions(), **overrides)
    if opts.max_request_bytes < opts.max_bytes:
        raise ValueError(f"the request limit ({opts.max_request_bytes} bytes) is below the per-file limit "
                         f"({opts.max_bytes} bytes)")
    limits = opts.body_limits()
    batcher = DynamicBatcher(lambda images: predict_images(detector, images), opts.max_batch,
                             opts.max_wait_ms / 1000, opts.max_queue, name="aigi-model")
    decode_pool = ThreadPoolExecutor(max(1, opts.decode_threads), thread_name_prefix="aigi-decode")
    key_digests = [key_digest(k) for k in opts.api_keys]
    limiter = RateLimiter(opts.rate_limit_per_min) if opts.rate_limit_per_min > 0 else None
    in_flight = 0
    index_html = (WEB_DIR / "index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()
        decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(title="aigi", version=__version__, lifespan=lifespan,
                         description="Tell camera photos from AI-generated images. POST images to /v1/detect "
                                     "(multipart `files`, or one raw image body). The page is at /.")
    app.state.batcher = batcher

    def rid(request) -> str:
        return request.state.request_id if hasattr(request.state, "request_id") else ""

    @app.exception_handler(RequestError)
    async def on_request_error(request, e: RequestError):
        # The body may be partly unread (a 10 GB upload cut at the limit, a refused key): close
        # the connection, or the server would go on receiving and discarding what is left of it.
        return error_response(e.status, e.code, e.message, rid(request), {**e.headers, "Connection": "close"})

    @app.exception_handler(HTTPException)
    async def on_http_error(request, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, f"http_{e.status_code}")
        return error_response(e.status_code, code, str(e.detail), rid(request), dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors())
        return error_response(422, "bad_request", problems or "invalid request", rid(request))

    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (a key of --api-key-file)")
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key of --api-key-file")

    def authorize(credentials=Depends(bearer), header_key: Optional[str] = Depends(api_key_header)) -> str:
        given = credentials.credentials if credentials is not None else header_key
        if given:
            digest = key_digest(given)
            ok = False
            for k in key_digests:  # every key is compared: the time does not tell which one matched
                ok |= hmac.compare_digest(digest, k)
            if ok:
                return digest.hex()
        raise RequestError(401, "unauthorized", "an API key is needed: 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                           {"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorize)] if key_digests else []
    errors_doc = {status: {"model": ErrorResponse, "description": text} for status, text in ERROR_RESPONSES.items()}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index_html, headers={
            # The page loads nothing but its own files; images are shown from blob: URLs.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                                       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer"})

    app.mount("/assets", StaticFiles(directory=WEB_DIR), name="assets")

    async def health() -> Health:
        return Health(aigi_version=__version__, model=model_name, labels=list(detector.labels),
                      threshold=detector.threshold, runtime=type(detector).__name__,
                      input_px=detector.preprocessing.crop, max_files=opts.max_files,
                      max_mb=megabytes(opts.max_bytes), max_request_mb=megabytes(opts.max_request_bytes),
                      max_pixels=MAX_IMAGE_PIXELS, auth=bool(key_digests), queued=batcher.queued,
                      in_flight=in_flight, batches=batcher.batches, images_scored=batcher.items_done,
                      pid=os.getpid())

    app.get("/v1/health", response_model=Health, summary="Model, limits and load")(health)
    app.get("/health", response_model=Health, summary="Alias of /v1/health", deprecated=True)(health)

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=guarded, summary="The model this server runs")
    async def models() -> ModelsResponse:
        config = getattr(detector, "config", {}) or {}
        return ModelsResponse(models=[ModelInfo(
            name=model_name, runtime=type(detector).__name__, labels=list(detector.labels),
            generators=list(detector.labels[1:]), threshold=detector.threshold, temperature=detector.temperature,
            input_px=detector.preprocessing.crop, backbone=config.get("backbone"),
            uncertain_band=list(detector.operating_point.band) if detector.operating_point.band else None,
            open_set_threshold=detector.operating_point.open_set_threshold)])

    def client_of(request, key: str) -> str:
        return f"key:{key}" if key else f"ip:{request.client.host if request.client else '-'}"

    async def detect(request: Request, key: str, filename: str, threshold: Optional[float] = None,
                     target_fpr: Optional[float] = None) -> DetectResponse:
        nonlocal in_flight
        try:
            point = request_point(detector, threshold, target_fpr)
        except ValueError as e:
            raise RequestError(422, "bad_request", str(e).replace("--target-fpr", "target_fpr")
                               .replace("--threshold P", "threshold=P").replace("--threshold", "threshold")) from None
        if limiter is not None and (wait := limiter.retry_after(client_of(request, key))) is not None:
            raise RequestError(429, "rate_limited", f"over {opts.rate_limit_per_min:g} requests a minute",
                               {"Retry-After": str(max(1, round(wait + 0.5)))})
        if in_flight >= opts.max_inflight:
            raise RequestError(503, "overloaded", f"{in_flight} requests in progress (limit {opts.max_inflight})",
                               {"Retry-After": "1"})
        in_flight += 1
        try:
            check_content_length(request.headers.get("content-length"), limits)
            content_type = request.headers.get("content-type")
            try:
                uploads = await read_uploads(content_type, request.stream(), limits, filename)
            except ClientDisconnect:
                raise RequestError(400, "client_disconnected", "the client went away before the body ended") from None
            raw = not (content_type or "").lower().lstrip().startswith("multipart/")
            loop = asyncio.get_running_loop()
            decoded = await asyncio.gather(*(loop.run_in_executor(decode_pool, decode_or_error, detector, u,
                                                                  opts.evidence, opts.crops) for u in uploads))
            if raw and isinstance(decoded[0], str):
                too_many = over_pixel_limit(uploads[0].data)
                raise RequestError(413 if too_many else 400, "too_many_pixels" if too_many else "unreadable",
                                   f"{uploads[0].name}: {decoded[0]}")
            images = [im for im in decoded if not isinstance(im, str)]
            try:
                predictions = iter(await batcher.run(images))
            except Overloaded as e:
                raise RequestError(503, "overloaded", str(e), {"Retry-After": str(e.retry_after_s)}) from None
            results = []
            for upload, im in zip(uploads, decoded):
                if isinstance(im, str):
                    results.append(Result(path=upload.name, error=im))
                else:
                    prediction = next(predictions)
                    prediction.path = upload.name
                    if point != detector.operating_point:  # this request's own threshold
                        decide(prediction, detector.labels, point)
                    results.append(Result(**prediction.to_dict()))
            return DetectResponse(results=results, threshold=point.threshold, model=model_name,
                                  uncertain_band=list(point.band) if point.band else None)
        finally:
            in_flight -= 1

    THRESHOLD_QUERY = Query(None, gt=0, lt=1, description="this request's threshold on p_fake (default the model's)")
    FPR_QUERY = Query(None, gt=0, lt=1, description="this request's threshold chosen for this false-positive rate "
                                                    "on the model's held-out reals")
    if key_digests:  # the key also names the client for the rate limit
        async def detect_keyed(request: Request, key: str = Depends(authorize),
                               filename: str = Query("upload", max_length=1024, description="name of a raw-body image"),
                               threshold: Optional[float] = THRESHOLD_QUERY, target_fpr: Optional[float] = FPR_QUERY,
                               ) -> DetectResponse:
            return await detect(request, key, filename, threshold, target_fpr)
        handler = detect_keyed
    else:
        async def detect_open(request: Request,
                              filename: str = Query("upload", max_length=1024, description="name of a raw-body image"),
                              threshold: Optional[float] = THRESHOLD_QUERY, target_fpr: Optional[float] = FPR_QUERY,
                              ) -> DetectResponse:
            return await detect(request, "", filename, threshold, target_fpr)
        handler = detect_open

    description = ("Multipart `files` (one or more images), or one image as the raw body with its Content-Type. "
                   "One result per file, in upload order; a file that cannot be scored carries `error` and the "
                   f"others are still scored. At most {opts.max_files} files, {megabytes(opts.max_bytes):g} MB each, "
                   f"{megabytes(opts.max_request_bytes):g} MB per request.")
    app.post("/v1/detect", response_model=DetectResponse, responses=errors_doc, summary="Score images",
             description=description, openapi_extra={"requestBody": DETECT_BODY})(handler)
    app.post("/detect", response_model=DetectResponse, responses=errors_doc, summary="Alias of /v1/detect",
             deprecated=True, openapi_extra={"requestBody": DETECT_BODY})(handler)

    if opts.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(opts.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestContext)  # added last: the outermost layer, so every response has the ID
    return app


__all__ = ["create_app", "error_response"]
