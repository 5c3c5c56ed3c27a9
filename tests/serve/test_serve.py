"""aigi serve: the HTTP API scores uploads exactly as aigi detect scores files, under limits."""

from __future__ import annotations

import asyncio
import re
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'aigi[serve]'")
pytest.importorskip("python_multipart", reason="pip install 'aigi[serve]'")
pytest.importorskip("fastapi_offline", reason="pip install 'aigi[serve]'")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from aigi.cli.main import main  # noqa: E402
from aigi.detector.model import Detector  # noqa: E402
from aigi.inference.batcher import DynamicBatcher, Overloaded  # noqa: E402
from aigi.io.uploads import BodyLimits, RequestError, read_uploads  # noqa: E402
from aigi.serve.access import load_api_keys  # noqa: E402
from aigi.serve.app import create_app  # noqa: E402
from aigi.serve.handling import score_uploads  # noqa: E402
from aigi.serve.run import share_cores  # noqa: E402
from conftest import encode_image  # noqa: E402
from serving import running_server  # noqa: E402
from synthetic import synthetic_image  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    return Detector.from_pretrained("default")


@pytest.fixture(scope="module")
def client(detector):
    return TestClient(create_app(detector, "default", max_files=4, max_bytes=1_000_000, max_request_bytes=3_000_000))


def photo(seed: int, size: int = 150) -> Image.Image:
    return synthetic_image(np.random.default_rng(seed), fake=seed % 2 == 1, size=size)


def jpeg(seed: int = 0, size: int = 150) -> bytes:
    return encode_image(photo(seed, size), "JPEG", quality=90)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape), with one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return response.status_code, body["error"]["code"]


# ----------------------------------------------------------------------------- endpoints


def test_health_models_and_their_aliases(client, detector):
    body = client.get("/v1/health").json()
    assert body["status"] == "ok" and body["model"] == "default" and body["auth"] is False
    assert body["labels"] == detector.labels and body["threshold"] == detector.threshold
    assert body["max_files"] == 4 and body["max_mb"] == 0.954 and body["max_pixels"] == 89_478_485
    legacy = client.get("/health").json()
    load = {"queued", "in_flight", "batches", "images_scored"}
    assert {k: v for k, v in legacy.items() if k not in load} == {k: v for k, v in body.items() if k not in load}
    model = client.get("/v1/models").json()["models"][0]
    assert model["name"] == "default" and model["generators"] == detector.labels[1:]
    assert model["input_px"] == detector.preprocessing.crop


def test_uploads_score_like_files_on_disk_and_bad_ones_are_reported(client, detector, tmp_path):
    a, b = jpeg(0), encode_image(photo(1, 300), "PNG")
    files = [("files", ("a.jpg", a, "image/jpeg")),
             ("files", ("notes.jpg", b"just text, not an image", "image/jpeg")),
             ("files", ("b.png", b, "image/png")),
             ("files", ("cut.png", b[: len(b) // 2], "image/png"))]
    response = client.post("/v1/detect", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["path"] for r in results] == ["a.jpg", "notes.jpg", "b.png", "cut.png"]
    assert "not an image" in results[1]["error"] and results[1]["p_fake"] is None
    assert "truncated" in results[3]["error"] or "corrupt" in results[3]["error"]

    (tmp_path / "a.jpg").write_bytes(a)
    (tmp_path / "b.png").write_bytes(b)
    on_disk = detector.predict([tmp_path / "a.jpg", tmp_path / "b.png"])
    for served, local in zip([results[0], results[2]], on_disk):
        assert served["error"] == "" and served["verdict"] == local.verdict
        assert served["p_fake"] == pytest.approx(local.p_fake, abs=1e-6)
        assert set(served["generator_probs"]) == set(detector.labels)
    # The legacy path answers the same, and so does the Python API.
    assert client.post("/detect", files=files).json()["results"] == results
    direct = score_uploads(detector, [("a.jpg", a), ("notes.jpg", b"x")])
    assert direct[0].p_fake == pytest.approx(results[0]["p_fake"], abs=1e-6) and direct[1].error


def test_a_raw_image_body_is_one_upload(client):
    data = jpeg(5)
    multipart = client.post("/v1/detect", files=[("files", ("x.jpg", data, "image/jpeg"))]).json()["results"][0]
    for content_type in ("image/jpeg", "application/octet-stream", "image/png"):  # the bytes decide, not the label
        raw = client.post("/v1/detect?filename=x.jpg", content=data, headers={"Content-Type": content_type})
        assert raw.status_code == 200
        assert raw.json()["results"][0] == multipart
    assert client.post("/v1/detect", content=data, headers={"Content-Type": "image/jpeg"}).json()["results"][0]["path"] == "upload"


@pytest.mark.parametrize("content_type, fmt", [("image/heic", "HEIF"), ("image/heif", "HEIF"), ("image/avif", "AVIF")])
def test_a_raw_heic_or_avif_body_is_taken_as_multipart_ones_are(client, content_type, fmt):
    from PIL import features

    from aigi.io import decode

    pytest.importorskip("pillow_heif")
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF support")
    decode.register_heif_opener()  # Pillow writes HEIF through pillow-heif's plugin
    data = encode_image(photo(3, 96), fmt)
    name = f"phone.{fmt.lower()}"
    multipart = client.post("/v1/detect", files=[("files", (name, data, content_type))])
    raw = client.post(f"/v1/detect?filename={name}", content=data, headers={"Content-Type": content_type})
    assert multipart.status_code == 200 and raw.status_code == 200, raw.text
    assert raw.json()["results"][0] == multipart.json()["results"][0]
    assert raw.json()["results"][0]["p_fake"] is not None


def test_serve_crops_n_is_the_number_of_crops_in_all(tmp_path):
    import torch

    torch.manual_seed(0)
    two_scales = Detector.from_backbone("tiny-clip", ["genA"], crops=2, scales=(1.0, 0.5)).eval()
    data = encode_image(photo(4, 160), "PNG")  # room for 4x4 native 32 px crops and 2x2 half-scale ones
    for crops, want in ((None, 4), (12, 12), (3, 3)):
        with TestClient(create_app(two_scales, crops=crops)) as c:
            (result,) = c.post("/v1/detect", files=[("files", ("x.png", data, "image/png"))]).json()["results"]
        assert len(result["crops"]) == want and {x["scale"] for x in result["crops"]} == {1.0, 0.5}
        (local,) = two_scales.predict([("x.png", data)], crops=crops)
        assert result["p_fake"] == pytest.approx(local.p_fake, abs=1e-6)


@pytest.mark.parametrize("content_type, body, status, code", [
    ("text/plain", b"hello", 415, "unsupported_media_type"),
    ("application/json", b'{"files": []}', 415, "unsupported_media_type"),
    ("image/svg+xml", b"<svg/>", 415, "unsupported_media_type"),
    (None, b"", 415, "unsupported_media_type"),
    ("image/png", b"garbage, not a PNG", 400, "unreadable"),
    ("image/jpeg", b"", 400, "unreadable"),
    ("image/png", png_claiming(100_000, 100_000), 413, "too_many_pixels"),
    ("image/png", b"\x89PNG" + b"\0" * 1_000_001, 413, "too_large"),
    ("multipart/form-data", b"--x\r\n", 422, "bad_form"),  # no boundary
    ("multipart/form-data; boundary=" + "b" * 71, b"", 422, "bad_form"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; "
                                          b"filename=\"a.jpg\"\r\n\r\nabc", 422, "bad_form"),  # truncated
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
                                          b"hi\r\n--xyz--\r\n", 422, "bad_form"),  # no files part
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nX-Junk: " + b"j" * 10_000 + b"\r\n\r\nhi\r\n--xyz--\r\n",
     422, "bad_form"),  # a part header over python-multipart's limit
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_bad_requests_get_a_documented_json_error(client, content_type, body, status, code):
    headers = {"Content-Type": content_type} if content_type else {}
    assert error_of(client.post("/v1/detect", content=body, headers=headers)) == (status, code)


def test_limits_are_enforced_with_a_reason(client):
    big = encode_image(Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)), "PNG")
    assert 1_000_000 < len(big) < 3_000_000
    small = encode_image(photo(2, 32), "PNG")
    results = client.post("/v1/detect", files=[("files", ("big.png", big, "image/png")),
                                               ("files", ("small.png", small, "image/png"))]).json()["results"]
    assert results[0]["error"] == "upload is over the 0.954 MB limit" and results[1]["verdict"]

    too_many = client.post("/v1/detect", files=[("files", (f"{i}.png", small, "image/png")) for i in range(5)])
    assert error_of(too_many) == (413, "too_many_files") and "limit is 4" in too_many.json()["error"]["message"]
    bomb = client.post("/v1/detect", files=[("files", ("bomb.png", png_claiming(100_000, 100_000), "image/png"))])
    assert "decompression bomb" in bomb.json()["results"][0]["error"].replace("-", " ")
    # Over the request limit: refused from Content-Length, and cut while streaming when there is none.
    assert error_of(client.post("/v1/detect", files=[("files", ("a", big, "")), ("files", ("b", big, ""))])) == (413, "too_large")

    def chunked():  # no Content-Length; TestClient buffers it, so it is finite (the real server gets endless ones)
        yield b"--xyz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n\r\n"
        for _ in range(80):
            yield b"\0" * 65536

    cut = client.post("/v1/detect", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert error_of(cut) == (413, "too_large")
    many_fields = b"".join(b"--xyz\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n" for _ in range(5000))
    assert error_of(client.post("/v1/detect", content=many_fields + b"--xyz--\r\n",
                                headers={"Content-Type": "multipart/form-data; boundary=xyz"})) == (413, "too_many_parts")
    assert error_of(client.post("/v1/detect")) == (415, "unsupported_media_type")  # no body at all


def test_no_upload_is_ever_written_to_disk(detector, monkeypatch):
    """Starlette's UploadFile spools parts over 1 MB to a temporary file; aigi reads bodies itself."""
    import builtins
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError(f"an upload was about to be written to disk: {args[:1]}")

    real_open = builtins.open

    def open_read_only(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr("starlette.formparsers.SpooledTemporaryFile", refuse)  # imported there by name
    monkeypatch.setattr(builtins, "open", open_read_only)
    client = TestClient(create_app(detector, max_bytes=8_000_000))
    big = encode_image(photo(4, 1000), "BMP")  # 3 MB: Starlette would spool it (over 1 MB) to a file
    assert len(big) > 2 * 2**20
    response = client.post("/v1/detect", files=[("files", ("a.bmp", big, "image/bmp")),
                                                ("files", ("b.jpg", jpeg(4), "image/jpeg"))])
    assert response.status_code == 200 and all(r["verdict"] for r in response.json()["results"])
    raw = client.post("/v1/detect", content=big, headers={"Content-Type": "image/bmp"})
    assert raw.status_code == 200 and raw.json()["results"][0]["verdict"]


def test_errors_and_request_ids(client):
    assert error_of(client.get("/nope")) == (404, "not_found")
    assert error_of(client.get("/v1/detect")) == (405, "method_not_allowed")
    assert error_of(client.post("/v1/detect?filename=" + "x" * 2000, content=jpeg(), headers={"Content-Type": "image/jpeg"})) \
        == (422, "bad_request")
    echoed = client.get("/v1/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert echoed.headers["x-request-id"] == "trace-42.a:b"
    for hostile in ("has spaces", "x" * 200, "a/b;c"):
        replaced = client.get("/v1/health", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert client.get("/v1/health").headers["x-content-type-options"] == "nosniff"


def test_openapi_is_typed_and_the_docs_work_offline(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/health", "/v1/models", "/detect", "/health"} <= set(spec["paths"])
    detect = spec["paths"]["/v1/detect"]["post"]
    assert {"multipart/form-data", "image/jpeg", "application/octet-stream"} <= set(detect["requestBody"]["content"])
    assert detect["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DetectResponse")
    assert {"400", "413", "415", "422", "429", "503"} <= set(detect["responses"])
    assert {"DetectResponse", "Result", "Crop", "Health", "ModelsResponse", "ErrorResponse"} <= set(spec["components"]["schemas"])
    for page in ("/docs", "/redoc", "/"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and not re.search(r"(src|href)=[\"']?(https?:)?//", html), page
        for asset in re.findall(r"(?:src|href)=[\"']([^\"']+\.(?:js|css))", html):
            assert client.get(asset if asset.startswith("/") else "/" + asset).status_code == 200, asset
    page = client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'label for="files"' in page.text


# ----------------------------------------------------------------------------- access control


def test_api_keys(detector, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\nalpha-key\n\n  beta-key  \n")
    assert load_api_keys(keys) == ("alpha-key", "beta-key")
    app = TestClient(create_app(detector, api_keys=load_api_keys(keys)))
    files = [("files", ("a.jpg", jpeg(), "image/jpeg"))]
    assert error_of(app.post("/v1/detect", files=files)) == (401, "unauthorized")
    assert app.post("/v1/detect", files=files).headers["www-authenticate"] == "Bearer"
    assert error_of(app.post("/v1/detect", files=files, headers={"Authorization": "Bearer alpha-keyX"})) == (401, "unauthorized")
    assert error_of(app.post("/v1/detect", files=files, headers={"X-API-Key": "alpha"})) == (401, "unauthorized")
    assert app.post("/v1/detect", files=files, headers={"Authorization": "Bearer alpha-key"}).status_code == 200
    assert app.post("/detect", files=files, headers={"X-API-Key": "beta-key"}).status_code == 200
    assert app.get("/v1/models").status_code == 401 and app.get("/v1/models", headers={"X-API-Key": "beta-key"}).status_code == 200
    assert app.get("/v1/health").json()["auth"] is True  # health stays open, for load balancers
    assert {"HTTPBearer", "APIKeyHeader"} <= set(app.get("/openapi.json").json()["components"]["securitySchemes"])

    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    for bad, reason in ((tmp_path / "empty.txt", "no keys"), (tmp_path / "missing.txt", "cannot read")):
        with pytest.raises(ValueError, match=reason) as e:
            load_api_keys(bad)
        assert str(bad) in str(e.value)
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--api-key-file", str(bad)])
        assert str(bad) in str(exit_info.value.code)


def test_cors_is_off_unless_an_origin_is_given(detector, client):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/detect", headers=preflight).headers
    assert "access-control-allow-origin" not in client.get("/v1/health", headers={"Origin": "https://app.example"}).headers
    app = TestClient(create_app(detector, cors_origins=("https://app.example",)))
    allowed = app.options("/v1/detect", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in app.options("/v1/detect", headers={**preflight, "Origin": "https://evil.example"}).headers
    assert "x-request-id" in app.get("/v1/health", headers={"Origin": "https://app.example"}).headers["access-control-expose-headers"].lower()


def test_rate_limit_and_overload_answer_with_retry_after(detector):
    files = [("files", ("a.jpg", jpeg(), "image/jpeg"))]
    limited = TestClient(create_app(detector, rate_limit_per_min=2))
    assert [limited.post("/v1/detect", files=files).status_code for _ in range(2)] == [200, 200]
    third = limited.post("/v1/detect", files=files)
    assert error_of(third) == (429, "rate_limited") and int(third.headers["retry-after"]) >= 1
    assert limited.get("/v1/health").status_code == 200  # only scoring is limited
    full = TestClient(create_app(detector, max_inflight=0)).post("/v1/detect", files=files)
    assert error_of(full) == (503, "overloaded") and full.headers["retry-after"] == "1"


class GatedDetector:
    """The real detector, whose scoring waits for ``gate``: holds the model busy on demand."""

    def __init__(self, detector, gate: threading.Event) -> None:
        self._detector, self._gate, self.calls = detector, gate, []

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def score_inputs(self, inputs, **kwargs):
        self._gate.wait(30)
        self.calls.append(len(inputs))
        return self._detector.score_inputs(inputs, **kwargs)


def test_concurrent_requests_share_a_forward_pass_and_a_full_queue_is_a_503(detector):
    gate = threading.Event()
    gated = GatedDetector(detector, gate)
    app = create_app(gated, max_batch=8, max_queue=2, max_wait_ms=1)
    batcher = app.state.batcher
    answers: dict[int, httpx.Response] = {}
    with TestClient(app) as c:
        def post(i: int) -> None:
            answers[i] = c.post("/v1/detect", files=[("files", (f"{i}.jpg", jpeg(i), "image/jpeg"))])

        threads = [threading.Thread(target=post, args=(0,))]
        threads[0].start()
        while batcher.queued or not threads[0].is_alive():  # request 0 is in the model (held at the gate)
            time.sleep(0.01)
        time.sleep(0.1)
        for i in (1, 2):
            threads.append(threading.Thread(target=post, args=(i,)))
            threads[-1].start()
        deadline = time.monotonic() + 20
        while batcher.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        post(3)  # the queue holds 2 images: a third is refused at once
        assert error_of(answers[3]) == (503, "overloaded") and int(answers[3].headers["retry-after"]) >= 1
        gate.set()
        for t in threads:
            t.join(30)
    assert [answers[i].status_code for i in range(3)] == [200, 200, 200]
    assert gated.calls == [1, 2]  # requests 1 and 2 were scored in one forward pass
    for i in range(3):
        result = answers[i].json()["results"][0]
        assert result["path"] == f"{i}.jpg"
        alone = score_uploads(detector, [(f"{i}.jpg", jpeg(i))])[0]
        assert result["p_fake"] == pytest.approx(alone.p_fake, abs=1e-5)  # batching does not change a score


# ----------------------------------------------------------------------------- the parts


def test_batcher_hands_every_caller_its_own_results():
    seen: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        seen.append(list(items))
        time.sleep(0.02)
        return [2 * x for x in items]

    batcher = DynamicBatcher(double, max_batch=4, max_wait_s=0.05, max_queue=100)
    futures = [batcher.submit(list(range(10 * i, 10 * i + n))) for i, n in enumerate([1, 2, 3, 1, 6, 0])]
    results = [f.result(10) for f in futures]
    assert results == [[2 * x for x in range(10 * i, 10 * i + n)] for i, n in enumerate([1, 2, 3, 1, 6, 0])]
    assert all(len(b) <= 4 for b in seen[:-1]) and sorted(x for b in seen for x in b) == sorted(
        x for i, n in enumerate([1, 2, 3, 1, 6]) for x in range(10 * i, 10 * i + n))
    assert asyncio.run(batcher.run([7])) == [14]

    def fail(items):
        raise ValueError("model exploded")

    broken = DynamicBatcher(fail, max_batch=4, max_wait_s=0.05)
    with pytest.raises(ValueError, match="exploded"):
        broken.submit([1]).result(10)
    broken.close()
    with pytest.raises(RuntimeError, match="closed"):
        broken.submit([1])

    gate = threading.Event()
    slow = DynamicBatcher(lambda items: gate.wait(10) and items, max_batch=1, max_wait_s=0, max_queue=2)
    first = slow.submit([1])
    time.sleep(0.1)  # taken by the thread, which waits at the gate
    queued = [slow.submit([2]), slow.submit([3])]
    with pytest.raises(Overloaded) as e:
        slow.submit([4])
    assert e.value.retry_after_s >= 1
    queued[0].cancel()  # a caller that gave up costs no model time
    gate.set()
    assert first.result(10) == [1] and queued[1].result(10) == [3] and slow.items_done == 2


def test_body_reader_cuts_slow_and_endless_bodies():
    limits = BodyLimits(max_files=2, max_file_bytes=1000, max_body_bytes=10_000, body_timeout_s=0.3)
    sent = 0

    async def endless():
        nonlocal sent
        while True:
            sent += 4096
            yield b"\0" * 4096

    async def drip():
        while True:
            await asyncio.sleep(0.05)
            yield b"\0"

    async def reason(content_type, body):
        with pytest.raises(RequestError) as e:
            await read_uploads(content_type, body, limits)
        return e.value.status, e.value.code

    assert asyncio.run(reason("image/png", endless())) == (413, "too_large") and sent <= 4096
    sent = 0
    async def endless_part():
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n\r\n"
        async for chunk in endless():
            yield chunk

    assert asyncio.run(reason("multipart/form-data; boundary=b", endless_part())) == (413, "too_large")
    assert sent <= 12_288
    assert asyncio.run(reason("image/png", drip())) == (408, "timeout")


def test_cli_checks_its_flags_before_loading_anything(tmp_path, capsys):
    # A model or device that cannot be used: one line and exit status 2, as aigi detect.
    for argv, reason, status in ((["--model", str(tmp_path / "nope")], "cannot load model", 2),
                                 (["--model", str(tmp_path / "nope"), "--workers", "2"], "cannot load model", 2),
                                 (["--device", "gpu", "--workers", "2"], "unknown device 'gpu'", 2),
                                 (["--workers", "0"], "--workers must be at least 1", None),
                                 (["--max-mb", "10", "--max-request-mb", "5"], "below --max-mb", None)):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", *argv])
        said = str(exit_info.value.code) + capsys.readouterr().err
        assert reason in said, (argv, said)
        assert status is None or exit_info.value.code == status, (argv, exit_info.value.code)


def test_cores_are_shared_between_decoding_and_the_model():
    import os

    cores = len(os.sched_getaffinity(0))
    decode, threads = share_cores(1)
    assert decode == max(1, cores // 2) and threads == max(1, cores - decode)
    assert share_cores(4 * cores) == (1, 1)  # more processes than cores: one thread of each
    assert share_cores(1, 3, 5) == (3, 5)  # --decode-threads and --threads win


def test_aigi_serve_with_workers_and_keys_over_http(tmp_path):
    (tmp_path / "keys").write_text("s3cret\n")
    with running_server("--workers", "2", "--api-key-file", str(tmp_path / "keys"), log=tmp_path / "log") as (url, proc):
        files = [("files", ("x.jpg", jpeg(3), "image/jpeg"))]
        assert httpx.post(f"{url}/v1/detect", files=files, timeout=30).status_code == 401
        response = httpx.post(f"{url}/v1/detect", files=files, timeout=30,
                              headers={"Authorization": "Bearer s3cret", "X-Request-ID": "from-the-test"})
        result = response.json()["results"][0]
        assert result["path"] == "x.jpg" and 0.0 <= result["p_fake"] <= 1.0 and result["verdict"]
        assert response.headers["x-request-id"] == "from-the-test"
        pids = {httpx.get(f"{url}/v1/health", timeout=10).json()["pid"] for _ in range(20)}
        assert proc.pid not in pids and len(pids) >= 1
    log = (tmp_path / "log").read_text()
    assert "2 worker processes" in log and log.count("Application startup complete") == 2
    assert re.search(r'"POST /v1/detect" 200 [\d.]+ms request_id=from-the-test', log)
