"""Reading an upload request into memory, under limits, without ever writing it to disk.

The body arrives as a stream of chunks (ASGI ``http.request`` messages). It is read under
a byte limit and a deadline: a body larger than the limit is cut off there (a 10 GB upload
costs the limit, not 10 GB), and a client that drips bytes slowly is cut off at the
deadline instead of holding the request open. Multipart bodies are parsed while they
stream in, with python-multipart's callback parser: Starlette's ``UploadFile`` would spool
large parts to a temporary file, and a server that scores untrusted images should not write
them anywhere.

Two request shapes are accepted:

- ``multipart/form-data`` with one or more ``files`` parts (what browsers and ``curl -F`` send);
- a raw image body with its own ``Content-Type`` (``image/jpeg``, ..., ``image/heic``,
  ``image/avif``, or ``application/octet-stream``): one image.

Whatever is wrong with a request as a whole raises :class:`RequestError` with the HTTP
status and a stable error code; a single part over the per-file limit is not an error of
the request: it comes back as an :class:`Upload` with ``error`` set, and the others are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILES_FIELD = "files"
# Declared types a raw body may have. Decoding sniffs the bytes, so the declared type only
# has to say "an image we can read"; octet-stream means "look at the bytes".
# Phone photos come as HEIC/HEIF and many exports as AVIF: the decoder reads them
# (pillow-heif, Pillow), so a raw body of theirs is taken as multipart ones are.
RAW_IMAGE_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif", "image/bmp",
    "image/x-bmp", "image/x-ms-bmp", "image/tiff", "image/heic", "image/heif", "image/heic-sequence",
    "image/heif-sequence", "image/avif", "application/octet-stream",
})
MAX_NAME_CHARS = 1024
# Form fields other than ``files`` are ignored, but they still cost parsing: cap how many.
EXTRA_PARTS = 16
MAX_PART_HEADER_BYTES = 8192  # per header line; python-multipart has its own cap only in recent versions


def megabytes(n: float) -> float:
    """Bytes -> MB with 3 significant digits (for limits in messages: ``0.954 MB``)."""
    return float(f"{n / 2**20:.3g}")


class RequestError(Exception):
    """A request that cannot be served: HTTP ``status``, a stable ``code`` and a ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Upload:
    """One file of a request. ``error`` is set (and ``data`` empty) when it was over the limit."""

    name: str
    data: bytes | bytearray = b""
    error: str = ""


@dataclass(frozen=True)
class BodyLimits:
    max_files: int = 64
    max_file_bytes: int = 50 * 2**20
    max_body_bytes: int = 100 * 2**20
    body_timeout_s: float = 60.0

    def file_too_large(self) -> str:
        return f"upload is over the {megabytes(self.max_file_bytes):g} MB limit"

    def body_too_large(self) -> RequestError:
        return RequestError(413, "too_large", f"request body is over the {megabytes(self.max_body_bytes):g} MB limit")


def check_content_length(value: str | None, limits: BodyLimits) -> None:
    """Refuse a body that announces itself as too large before reading a byte of it."""
    if value is None:
        return
    try:
        n = int(value)
    except ValueError:
        raise RequestError(400, "bad_request", f"Content-Length {value[:40]!r} is not a number") from None
    if n > limits.max_body_bytes:
        raise limits.body_too_large()


async def limited(chunks: AsyncIterator[bytes], limits: BodyLimits) -> AsyncIterator[bytes]:
    """``chunks`` until the byte limit; :class:`RequestError` (413) as soon as it is passed.
    The deadline is the caller's (see :func:`read_uploads`): it covers the whole body."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise limits.body_too_large()
        if chunk:
            yield chunk


def _media_type(content_type: str | None) -> tuple[str, dict[bytes, bytes]]:
    if not content_type:
        return "", {}
    try:
        media, params = parse_options_header(content_type.encode("latin-1", "replace"))
    except (ValueError, UnicodeError):
        raise RequestError(415, "unsupported_media_type", "the Content-Type header cannot be parsed") from None
    return media.decode("latin-1").strip().lower(), params


class _FormCollector:
    """python-multipart callbacks that keep the ``files`` parts in memory, each under the limit."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.uploads: list[Upload] = []
        self.other_fields: list[str] = []
        self.complete = False
        self._n_parts = 0
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._buf: bytearray | None = None  # the current file part; None when its bytes are dropped
        self._current: Upload | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._n_parts += 1
        if self._n_parts > self.limits.max_files + EXTRA_PARTS:
            raise RequestError(413, "too_many_parts", f"more than {self.limits.max_files + EXTRA_PARTS} parts in "
                                                      "one form; send fewer fields")
        self._headers.clear()
        self._current, self._buf = None, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self._check_header()

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._field) + len(self._value) > MAX_PART_HEADER_BYTES:
            raise RequestError(422, "bad_form", f"a form part has a header line over {MAX_PART_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        # Raw bytes: a header is parsed as bytes, and only the file name is decoded (as UTF-8).
        self._headers[self._field.decode("latin-1").strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        try:
            disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        except (ValueError, UnicodeError):
            raise RequestError(422, "bad_form", "a form part has an unreadable Content-Disposition header") from None
        if disposition.lower() != b"form-data" or b"name" not in params:
            raise RequestError(422, "bad_form", "a form part has no 'Content-Disposition: form-data; name=...' header")
        name = params[b"name"].decode("utf-8", "replace")
        if name != FILES_FIELD:
            self.other_fields.append(name[:100])
            return
        if len(self.uploads) >= self.limits.max_files:
            raise RequestError(413, "too_many_files", f"more than {self.limits.max_files} files in one request; "
                                                      f"the limit is {self.limits.max_files}")
        filename = params.get(b"filename", b"").decode("utf-8", "replace")[:MAX_NAME_CHARS]
        self._current = Upload(filename or f"<upload {len(self.uploads)}>")
        self._buf = bytearray()
        self.uploads.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._buf is None:
            return  # another field, or a file already over the limit: its bytes are dropped
        if len(self._buf) + (end - start) > self.limits.max_file_bytes:
            self._current.error = self.limits.file_too_large()
            self._buf = None
            return
        self._buf += memoryview(data)[start:end]

    def _part_end(self) -> None:
        if self._current is not None and self._buf is not None:
            self._current.data = self._buf  # no copy: a 50 MB part is held once
        self._current, self._buf = None, None

    def _end(self) -> None:
        self.complete = True


async def _read_multipart(params: dict[bytes, bytes], body: AsyncIterator[bytes], limits: BodyLimits) -> list[Upload]:
    boundary = params.get(b"boundary", b"")
    if not 1 <= len(boundary) <= 70:  # RFC 2046
        raise RequestError(422, "bad_form", "multipart/form-data needs a boundary of 1 to 70 characters in its "
                                            "Content-Type")
    form = _FormCollector(limits)
    parser = MultipartParser(boundary, form.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
            if form.complete:
                break  # bytes after the closing boundary (an epilogue) are not needed
        parser.finalize()
    except MultipartParseError as e:
        raise RequestError(422, "bad_form", f"malformed multipart body: {e}") from None
    if not form.complete:
        raise RequestError(422, "bad_form", "the multipart body ends before its closing boundary (truncated upload?)")
    if not form.uploads:
        seen = f" (fields sent: {', '.join(sorted(set(form.other_fields)))})" if form.other_fields else ""
        raise RequestError(422, "bad_form", f"no '{FILES_FIELD}' field in the form{seen}; send images as "
                                            f"multipart '{FILES_FIELD}' parts")
    return form.uploads


async def _read_raw(name: str, body: AsyncIterator[bytes], limits: BodyLimits) -> list[Upload]:
    buf = bytearray()
    async for chunk in body:
        if len(buf) + len(chunk) > limits.max_file_bytes:
            raise RequestError(413, "too_large", limits.file_too_large())
        buf += chunk
    if not buf:
        raise RequestError(400, "unreadable", f"{name}: empty body (0 bytes)")
    return [Upload(name, buf)]


async def read_uploads(content_type: str | None, chunks: AsyncIterator[bytes], limits: BodyLimits,
                       raw_name: str = "upload") -> list[Upload]:
    """The files of a request, read under ``limits``; :class:`RequestError` for a bad request.

    ``chunks`` is the raw body stream (``request.stream()``); ``raw_name`` names a raw image body.
    """
    import anyio

    media, params = _media_type(content_type)
    if media == "multipart/form-data":
        reader = _read_multipart(params, limited(chunks, limits), limits)
    elif media in RAW_IMAGE_TYPES:
        reader = _read_raw(raw_name[:MAX_NAME_CHARS], limited(chunks, limits), limits)
    else:
        what = f"Content-Type {media!r}" if media else "a request without a Content-Type"
        raise RequestError(415, "unsupported_media_type",
                           f"{what} is not accepted: send multipart/form-data with '{FILES_FIELD}' parts, or one "
                           f"image as the body with its type ({', '.join(sorted(t for t in RAW_IMAGE_TYPES if t.startswith('image/')))} "
                           "or application/octet-stream)")
    timeout = limits.body_timeout_s if limits.body_timeout_s > 0 else math.inf
    try:
        with anyio.fail_after(timeout):
            return await reader
    except TimeoutError:
        raise RequestError(408, "timeout", f"the request body was not received within {limits.body_timeout_s:g} s") from None


__all__ = ["BodyLimits", "RequestError", "Upload", "check_content_length", "limited", "megabytes", "read_uploads"]
