"""Hostile traffic against a real ``aigi serve``: every answer is a documented status, the
server never dies, and its memory stays bounded.

Raw sockets, so that the bytes on the wire are exactly the broken ones (an HTTP client would
fix some of them). ``AIGI_FUZZ_CASES=2000`` runs a longer campaign than the default.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'aigi[serve]'")
pytest.importorskip("fastapi_offline", reason="pip install 'aigi[serve]'")

from serving import rss_mb, running_server  # noqa: E402
from synthetic import synthetic_image  # noqa: E402

N_CASES = int(os.environ.get("AIGI_FUZZ_CASES", "150"))
LIMIT_MB = 4
# What /v1/detect may answer, as documented (200 carries per-file errors).
DOCUMENTED = {200, 400, 408, 413, 415, 422}
BOUNDARY = "fuzzboundary7MA4YWxk"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    with running_server("--max-mb", "2", "--max-request-mb", str(LIMIT_MB), "--max-files", "8", "--body-timeout", "2",
                        log=log) as (url, proc):
        yield int(url.rsplit(":", 1)[1]), proc


def read_all(s: socket.socket, into: bytearray) -> bytearray:
    """Everything the server sends until it closes (or resets) the connection."""
    try:
        while chunk := s.recv(65536):
            into.extend(chunk)
    except OSError:
        pass
    return into


def request(port: int, head: str, body: bytes = b"", timeout: float = 30) -> tuple[int | None, bytes]:
    """Send raw bytes; (status, body) of the answer, or (None, b"") when the server only closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:  # no half-close after it: uvicorn takes EOF for a client that went away
            s.sendall(head.encode("latin-1") + body)
        except OSError:
            pass  # the server answered and closed before the whole body went out
        data = read_all(s, bytearray())
    if not data.startswith(b"HTTP/1.1 "):
        return None, b""
    head_end = data.find(b"\r\n\r\n")
    return int(data[9:12]), bytes(data[head_end + 4:])


def post(port: int, content_type: str | None, body: bytes, extra: str = "") -> tuple[int | None, bytes]:
    head = "POST /v1/detect HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return request(port, head + f"Content-Length: {len(body)}\r\n{extra}\r\n", body)


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = BOUNDARY) -> bytes:
    out = io.BytesIO()
    for name, filename, data in parts:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def absurd_headers() -> list[bytes]:
    """Valid headers that declare huge images: PNG, GIF, JPEG (SOF0) and BMP."""
    png = [b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b"")
           for w, h in ((100_000, 100_000), (1, 2**31 - 1), (2**31 - 1, 2**31 - 1), (0, 0))]
    gif = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"\x2c" + b"\0" * 8 + b"\x3b"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65535, 65535, 1) + b"\x01\x11\x00"
    jpeg = b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\0" * 32 + b"\xff\xd9"
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 200_000, 200_000, 1, 24, 0, 0, 0, 0, 0, 0)
    return [*png, gif, jpeg, bmp]


def valid_images(rng: np.random.Generator) -> list[bytes]:
    out = []
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        synthetic_image(rng, fake=False, size=int(rng.integers(16, 200))).save(buf, fmt)
        out.append(buf.getvalue())
    return out


def make_case(rng: np.random.Generator, images: list[bytes]) -> tuple[str, str | None, bytes]:
    """(what, Content-Type, body) of one hostile request."""
    image = images[int(rng.integers(len(images)))]
    kind = int(rng.integers(9))
    if kind == 0:
        types = ["image/png", "image/jpeg", "application/octet-stream", "text/plain", "application/json", "",
                 "image/svg+xml", "multipart/form-data", f"multipart/form-data; boundary={BOUNDARY}", None,
                 "image/png; charset=\x00\x01", "multipart/mixed; boundary=a", "IMAGE/JPEG"]
        return "random bytes", types[int(rng.integers(len(types)))], rng.bytes(int(rng.integers(0, 5000)))
    if kind == 1:
        cut = image[: int(rng.integers(0, len(image)))]
        return "truncated image", "application/octet-stream", cut
    if kind == 2:
        cut = image[: int(rng.integers(0, len(image)))]
        return "truncated image in a form", f"multipart/form-data; boundary={BOUNDARY}", multipart([("files", "cut.png", cut)])
    if kind == 3:
        tail = [b"PK\x03\x04" + rng.bytes(200), b"<html><script>alert(1)</script></html>", b"%PDF-1.4\n" + rng.bytes(100)]
        polyglot = image + tail[int(rng.integers(len(tail)))]
        if rng.random() < 0.5:
            polyglot = b"GIF89a/*" + polyglot  # a GIF header in front of everything
        return "polyglot", "image/jpeg", polyglot
    if kind == 4:
        heads = absurd_headers()
        h = heads[int(rng.integers(len(heads)))]
        if rng.random() < 0.5:
            return "absurd declared size", "image/png", h
        return "absurd declared size in a form", f"multipart/form-data; boundary={BOUNDARY}", multipart([("files", "huge.png", h)])
    if kind == 5:
        n = int(rng.integers(10, 3000))
        name = "files" if rng.random() < 0.5 else "other"
        return f"{n} tiny parts", f"multipart/form-data; boundary={BOUNDARY}", multipart([(name, f"{i}", b"x") for i in range(n)])
    if kind == 6:
        body = bytearray(multipart([("files", "a.jpg", image), ("files", "b.jpg", images[0])]))
        for _ in range(int(rng.integers(1, 20))):  # flip, drop or insert bytes anywhere
            i = int(rng.integers(len(body)))
            op = rng.integers(3)
            if op == 0:
                body[i] = int(rng.integers(256))
            elif op == 1:
                del body[i: i + int(rng.integers(1, 50))]
            else:
                body[i:i] = rng.bytes(int(rng.integers(1, 50)))
        return "mutated form", f"multipart/form-data; boundary={BOUNDARY}", bytes(body)
    if kind == 7:
        weird = [f"multipart/form-data; boundary=\"{BOUNDARY}\"", "multipart/form-data; boundary=",
                 "multipart/form-data; boundary=" + "x" * 200, f"multipart/form-data;boundary={BOUNDARY};boundary=zz",
                 "multipart/form-data; boundary=\x7f\x80\xff"]
        return "odd boundary", weird[int(rng.integers(len(weird)))], multipart([("files", "a.jpg", image)])
    junk_headers = b"Content-Disposition: form-data\r\nContent-Type: " + b"x" * int(rng.integers(1, 20_000)) + b"\r\n"
    body = f"--{BOUNDARY}\r\n".encode() + junk_headers + b"\r\n" + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    return "odd part headers", f"multipart/form-data; boundary={BOUNDARY}", body


def check_answer(what: str, content_type: str | None, status: int | None, body: bytes) -> None:
    assert status in DOCUMENTED, f"{what}: HTTP {status}"
    if status == 400 and body == b"Invalid HTTP request received.":
        # uvicorn's own answer to bytes that are not HTTP (control characters in a header):
        # such a request never reaches the app.
        assert any(not 32 <= ord(c) < 127 for c in content_type or ""), (what, content_type)
        return
    parsed = json.loads(body)
    if status == 200:
        for r in parsed["results"]:
            assert r["error"] or 0.0 <= r["p_fake"] <= 1.0, (what, r)
    else:
        assert parsed["error"]["code"] and parsed["error"]["message"], (what, parsed)


def test_fuzzed_requests_get_documented_answers_and_the_server_survives(server):
    port, proc = server
    rng = np.random.default_rng(20261202)
    images = valid_images(rng)
    status, body = post(port, "image/jpeg", images[0])
    assert status == 200
    rss_start = rss_mb(proc.pid)
    cases = [make_case(rng, images) for _ in range(N_CASES)]
    seen: dict[int | None, int] = {}

    def run(case):
        what, content_type, body = case
        status, answer = post(port, content_type, body)
        check_answer(what, content_type, status, answer)
        return status

    with ThreadPoolExecutor(4) as pool:  # a few at once, as real clients would
        for status in pool.map(run, cases):
            seen[status] = seen.get(status, 0) + 1
    assert len(seen) >= 4, seen  # the campaign reached several kinds of answer
    status, body = request(port, "GET /v1/health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
    assert status == 200 and proc.poll() is None
    assert rss_mb(proc.pid) - rss_start < 300, f"RSS grew from {rss_start:.0f} MB to {rss_mb(proc.pid):.0f} MB"


def test_an_endless_upload_is_cut_at_the_limit_and_memory_stays_flat(server):
    port, proc = server
    rss_start = rss_mb(proc.pid)
    for head in (  # announced as 10 GB, and chunked without any length
            f"POST /v1/detect HTTP/1.1\r\nHost: fuzz\r\nContent-Type: image/png\r\nContent-Length: {10 * 2**30}\r\n\r\n",
            f"POST /v1/detect HTTP/1.1\r\nHost: fuzz\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"):
        sent, answer = 0, bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            reader = threading.Thread(target=read_all, args=(s, answer))
            reader.start()
            s.sendall(head.encode())
            chunk = b"\0" * 2**20
            if "chunked" in head:
                preamble = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big\"\r\n\r\n").encode()
                s.sendall(f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n")
                chunk = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            t0 = time.monotonic()
            try:
                while sent < 10 * 2**30 and time.monotonic() - t0 < 60:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the server closed the connection: the upload was cut
            reader.join(30)
        assert answer.startswith(b"HTTP/1.1 413"), bytes(answer[:200])
        assert b'"too_large"' in answer
        # Cut at the limit: what got through is the limit plus what socket buffers hold.
        assert sent < (LIMIT_MB + 64) * 2**20, f"{sent / 2**20:.0f} MB sent before the cut"
    assert rss_mb(proc.pid) - rss_start < 100
    assert proc.poll() is None


def test_a_slow_drip_client_is_cut_at_the_deadline_and_holds_nothing_up(server):
    port, proc = server
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: fuzz\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        t0 = time.monotonic()
        # While this client drips one byte every 0.2 s, others are served at once.
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
        dripping = True

        def drip() -> None:
            while dripping:
                try:
                    s.send(b"\0")
                except OSError:
                    return
                time.sleep(0.2)

        dripper = threading.Thread(target=drip)
        dripper.start()
        t1 = time.monotonic()
        assert post(port, "image/png", buf.getvalue())[0] == 200
        assert time.monotonic() - t1 < 10
        read_all(s, answer)
        dripping = False
        dripper.join(5)
        elapsed = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408") and b'"timeout"' in answer, bytes(answer[:200])
    assert 1.5 < elapsed < 10  # --body-timeout 2
    assert proc.poll() is None
