"""``aigi serve``: a detector behind a web page and a versioned HTTP API (``pip install 'aigi[serve]'``).

    aigi serve                                   # the bundled model on http://127.0.0.1:8000
    curl -F files=@photo.jpg -F files=@art.webp http://127.0.0.1:8000/v1/detect
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/v1/detect

- ``/``: a page to drop images on and see their verdicts (``aigi/web/``, no CDN).
- ``POST /v1/detect``: multipart ``files`` (one or more) or one raw image body. Returns
  :class:`DetectResponse`, one result per file in upload order; a file that cannot be
  scored gets ``error`` and the others are still scored, as in ``aigi detect``.
- ``GET /v1/health``, ``GET /v1/models``; ``/detect`` and ``/health`` are aliases.
- ``/docs`` (Swagger UI) and ``/redoc`` from the files fastapi-offline ships: no CDN.
- Errors are ``{"error": {"code", "message", "request_id"}}`` with the HTTP status.

Uploads are read into memory under a byte limit and a deadline and never written to disk
(:mod:`aigi.uploads`), turned into model input in a small thread pool by the same function
as files on disk (:func:`aigi.inputs.load_input`: the pixel limit on the header before any
pixel, orientation, the same crops), and the images of concurrent requests are scored
together (:mod:`aigi.batcher`). Every call into the model goes through :func:`predict_images`.
"""

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations
# at run time.
import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .batcher import DynamicBatcher, Overloaded
from .data import DECODE_WORKERS, MAX_IMAGE_PIXELS, ImageDecodeError
from .inputs import ModelInput, load_input
from .uploads import BodyLimits, RequestError, Upload, check_content_length, megabytes, read_uploads

MAX_FILES_PER_REQUEST = 64
# Lower than the 256 MB aigi detect accepts from disk: a request's files are all held in memory.
MAX_UPLOAD_BYTES = 50 * 2**20
MAX_REQUEST_BYTES = 100 * 2**20
WEB_DIR = Path(__file__).parent / "web"
ENV_CONFIG = "AIGI_SERVE_CONFIG"
log = logging.getLogger("aigi.serve")

if TYPE_CHECKING:  # aigi.model imports torch: the --workers supervisor process never needs it
    from .scoring import Prediction


@dataclass(frozen=True)
class ServeOptions:
    """Limits and switches of one server process (the ``aigi serve`` flags)."""

    max_files: int = MAX_FILES_PER_REQUEST
    max_bytes: int = MAX_UPLOAD_BYTES  # per file
    max_request_bytes: int = MAX_REQUEST_BYTES  # whole body, multipart overhead included
    body_timeout_s: float = 60.0  # the whole body must arrive within this
    max_batch: int = 32  # images per forward pass
    max_wait_ms: float = 5.0  # how long an idle model waits for more images to batch
    max_queue: int = 256  # images waiting for the model; more -> 503
    max_inflight: int = 64  # requests being read, decoded or scored at once; more -> 503
    decode_threads: int = DECODE_WORKERS
    api_keys: tuple = ()
    cors_origins: tuple = ()
    rate_limit_per_min: float = 0.0  # per client (API key, else address); 0 = off
    evidence: bool = True  # read each upload's metadata (aigi.evidence); the verdict follows it

    def body_limits(self) -> BodyLimits:
        return BodyLimits(self.max_files, self.max_bytes, self.max_request_bytes, self.body_timeout_s)


# ----------------------------------------------------------------------------- response schemas


class Crop(BaseModel):
    box: list[Union[int, float]] = Field(description="[x0, y0, x1, y1] in the image's pixel coordinates")
    p_fake: float
    scale: float = Field(1.0, description="1.0: the image's own pixels; 0.5: this region seen at half size")


class Result(BaseModel):
    """One file. Fields beyond these (newer models) are passed through unchanged."""

    model_config = ConfigDict(extra="allow")
    path: str = Field(description="the uploaded file name")
    p_fake: Optional[float] = Field(None, description="calibrated probability that the image is AI-generated")
    verdict: str = Field("", description="ai-generated, real, or uncertain where the model abstains; the pixel "
                                         "verdict combined with the file's metadata (evidence); empty on error")
    pixel_verdict: str = Field("", description="the verdict from p_fake alone (threshold and uncertain band)")
    reason: str = Field("", description="why the verdict: the evidence rule that decided, or that the pixel verdict stands")
    generator: str = Field("", description="the generator it most resembles (AI-generated verdicts only); 'unknown' "
                                           "when it matches none the model was trained on")
    p_generator: Optional[float] = Field(None, description="probability of that generator, given AI-generated")
    generator_probs: dict[str, float] = Field(default_factory=dict, description="probability of every source label")
    error: str = Field("", description="why the file could not be scored; empty when it was")
    crops: Optional[list[Crop]] = Field(None, description="per-region scores (a heatmap), where the model gives them")
    image_size: Optional[list[int]] = Field(None, description="[width, height] as decoded, upright")
    too_small: Optional[bool] = Field(None, description="the image is smaller than the model's input")
    evidence: Optional[dict[str, Any]] = Field(None, description="findings from the file's metadata")


class DetectResponse(BaseModel):
    results: list[Result]
    threshold: float = Field(description="p_fake at or above which the verdict is ai-generated")
    uncertain_band: Optional[list[float]] = Field(None, description="[low, high]: a p_fake inside is uncertain")
    model: str


class Health(BaseModel):
    status: str = "ok"
    aigi_version: str
    model: str
    labels: list[str]
    threshold: float
    runtime: str
    input_px: int
    max_files: int
    max_mb: float = Field(description="per file")
    max_request_mb: float
    max_pixels: int = Field(description="larger images are refused from their header, before decoding")
    auth: bool = Field(description="whether /v1/detect needs an API key")
    queued: int = Field(description="images waiting for the model")
    in_flight: int = Field(description="requests being served")
    batches: int = Field(description="forward passes so far (this process)")
    images_scored: int = Field(description="images scored so far (this process); / batches = mean batch size")
    pid: int


class ModelInfo(BaseModel):
    name: str
    runtime: str
    labels: list[str]
    generators: list[str]
    threshold: float
    temperature: float
    input_px: int
    backbone: Optional[str] = None
    uncertain_band: Optional[list[float]] = Field(None, description="[low, high]: a p_fake inside is uncertain")
    open_set_threshold: Optional[float] = Field(None, description="p_generator under this: generator 'unknown'")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable: unreadable, too_large, unsupported_media_type, ...")
    message: str
    request_id: str = ""


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES = {
    400: "unreadable (a raw body that is not an image) or a bad header",
    401: "unauthorized: a missing or wrong API key (when the server has keys)",
    408: "timeout: the body did not arrive within the deadline",
    413: "too_large, too_many_files, too_many_parts, too_many_pixels",
    415: "unsupported_media_type",
    422: "bad_form: a malformed multipart body, or no 'files' part",
    429: "rate_limited (with Retry-After)",
    503: "overloaded (with Retry-After)",
}


# ----------------------------------------------------------------------------- scoring


def decode_upload(detector: Any, name: str, data: bytes, evidence: bool = True) -> ModelInput:
    """Upload bytes -> the crops the model sees (and the file's evidence), exactly as for a file
    on disk; ImageDecodeError if not."""
    return load_input((name, data), detector.preprocessing, evidence=evidence)


def predict_images(detector: Any, inputs: list[ModelInput]) -> "list[Prediction]":
    """The one call into the model: model inputs -> predictions, in one batch of their crops."""
    scores = detector.score_inputs(inputs, batch_size=max(1, sum(x.n_crops for x in inputs)))
    return [detector.make_prediction(x, s) for x, s in zip(inputs, scores)]


def request_point(detector: Any, threshold: Optional[float] = None, target_fpr: Optional[float] = None):
    """The operating point of one request: the model's, or its own ``threshold`` / ``target_fpr``
    (the band re-derived around it); ValueError when the model cannot give it."""
    from .calibration import choose_threshold, set_decision_rules
    from .scoring import OperatingPoint

    if threshold is None and target_fpr is None:
        return detector.operating_point
    config = {**detector.config, "threshold": choose_threshold(detector.config, threshold, target_fpr)}
    set_decision_rules(config)
    return OperatingPoint.from_config(config)


def score_uploads(detector: Any, uploads: list[tuple[str, bytes]], max_bytes: int = MAX_UPLOAD_BYTES,
                  model_lock: AbstractContextManager = nullcontext()) -> "list[Prediction]":
    """(file name, bytes) pairs -> predictions in the same order; unreadable ones carry ``error``.
    The synchronous path (no batching across calls); only the forward pass holds ``model_lock``."""
    from .scoring import Prediction

    results = [Prediction(path=name) for name, _ in uploads]
    decoded: list[tuple[int, ModelInput]] = []
    for i, (name, data) in enumerate(uploads):
        try:
            if len(data) > max_bytes:
                raise ImageDecodeError(name, f"upload is over the {megabytes(max_bytes):g} MB limit")
            decoded.append((i, decode_upload(detector, name, data)))
        except ImageDecodeError as e:
            results[i].error = e.reason
    if decoded:
        with model_lock:
            predictions = predict_images(detector, [im for _, im in decoded])
        for (i, _), prediction in zip(decoded, predictions):
            prediction.path = results[i].path
            results[i] = prediction
    return results


def _decode_or_error(detector: Any, upload: Upload, evidence: bool = True) -> Union[ModelInput, str]:
    if upload.error:
        return upload.error
    try:
        image = decode_upload(detector, upload.name, upload.data, evidence)
        upload.data = b""  # the encoded bytes are not needed while the image waits for the model
        return image
    except ImageDecodeError as e:
        return e.reason
    except Exception as e:  # one hostile file never fails the request
        return f"cannot decode ({type(e).__name__}: {e})"


def _over_pixel_limit(data: bytes) -> bool:
    """Whether the header alone declares more pixels than aigi's decoder accepts."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[0] * im.size[1] > MAX_IMAGE_PIXELS
    except Image.DecompressionBombError:  # Pillow's own refusal, at twice its limit
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------- access control


def load_api_keys(path: Union[str, os.PathLike]) -> tuple:
    """One key per line (blank lines and ``#`` comments ignored); ValueError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--api-key-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ValueError(f"--api-key-file {path}: no keys in the file (one key per line)")
    return keys


def _digest(key: str) -> bytes:
    # Fixed-length digests: compare_digest then takes the same time whatever the key's length.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class RateLimiter:
    """Token buckets per client: ``per_min`` requests a minute, bursts of up to ``per_min``."""

    def __init__(self, per_min: float, max_clients: int = 10_000) -> None:
        self.rate, self.capacity, self.max_clients = per_min / 60.0, max(1.0, per_min), max_clients
        self._buckets: OrderedDict = OrderedDict()

    def retry_after(self, client: str) -> Optional[float]:
        """None when ``client`` may go ahead (a token is taken), else seconds until it may."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = None if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[client] = (tokens - 1 if wait is None else tokens, now)
        while len(self._buckets) > self.max_clients:  # forget the longest-idle clients first
            self._buckets.popitem(last=False)
        return wait


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
           ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "application/octet-stream")},
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
    key_digests = [_digest(k) for k in opts.api_keys]
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
            digest = _digest(given)
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
        from .scoring import decide
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
            decoded = await asyncio.gather(*(loop.run_in_executor(decode_pool, _decode_or_error, detector, u,
                                                                  opts.evidence) for u in uploads))
            if raw and isinstance(decoded[0], str):
                too_many = _over_pixel_limit(uploads[0].data)
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


# ----------------------------------------------------------------------------- running it


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
    uvicorn.run("aigi.serve:app_from_env", factory=True, workers=workers, host=host, port=port,
                **_uvicorn_defaults(uvicorn_options))


def app_from_env():
    """The app of one ``--workers`` process, from the settings :func:`serve_workers` left in the environment."""
    from .export import load_runtime

    config = json.loads(os.environ[ENV_CONFIG])
    if config["runtime"] == "torch":
        set_compute_threads(config["threads"], config["explicit_threads"])
    detector = load_runtime(config["model"], runtime=config["runtime"], device=config["device"],
                            threads=config["threads"], spinning=False)
    from .calibration import apply_operating_point

    apply_operating_point(detector, config.get("threshold"), config.get("target_fpr"), str(config["model"]))
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config["options"].items()}
    if config.get("api_key_file"):
        options["api_keys"] = load_api_keys(config["api_key_file"])
    return create_app(detector, str(config["model"]), ServeOptions(**options))


__all__ = ["DetectResponse", "ServeOptions", "app_from_env", "create_app", "decode_upload", "load_api_keys",
           "predict_images", "score_uploads", "serve", "serve_workers", "set_compute_threads", "share_cores"]
