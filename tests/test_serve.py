"""aigi serve: the HTTP API scores uploads exactly as aigi detect scores files."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'aigi[serve]'")
pytest.importorskip("python_multipart", reason="pip install 'aigi[serve]'")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from aigi.cli import main  # noqa: E402
from aigi.model import Detector  # noqa: E402
from aigi.serve import create_app  # noqa: E402
from conftest import encode_image  # noqa: E402
from synthetic import synthetic_image  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    return Detector.from_pretrained("default")


@pytest.fixture(scope="module")
def client(detector):
    return TestClient(create_app(detector, "default", max_files=4, max_bytes=1_000_000))


def photo(seed: int, size: int = 150) -> Image.Image:
    return synthetic_image(np.random.default_rng(seed), fake=seed % 2 == 1, size=size)


def test_health_describes_the_model(client, detector):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "default"
    assert body["labels"] == detector.labels and body["threshold"] == detector.threshold
    assert body["max_files"] == 4


def test_uploads_score_like_files_on_disk_and_bad_ones_are_reported(client, detector, tmp_path):
    jpeg, png = encode_image(photo(0), "JPEG", quality=90), encode_image(photo(1, 300), "PNG")
    files = [("files", ("a.jpg", jpeg, "image/jpeg")),
             ("files", ("notes.jpg", b"just text, not an image", "image/jpeg")),
             ("files", ("b.png", png, "image/png")),
             ("files", ("cut.png", png[: len(png) // 2], "image/png"))]
    response = client.post("/detect", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["path"] for r in results] == ["a.jpg", "notes.jpg", "b.png", "cut.png"]
    assert "not an image" in results[1]["error"] and results[1]["p_fake"] is None
    assert "truncated" in results[3]["error"] or "corrupt" in results[3]["error"]

    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    on_disk = detector.predict([tmp_path / "a.jpg", tmp_path / "b.png"])
    for served, local in zip([results[0], results[2]], on_disk):
        assert served["error"] == "" and served["verdict"] == local.verdict
        assert served["p_fake"] == pytest.approx(local.p_fake, abs=1e-6)
        assert set(served["generator_probs"]) == set(detector.labels)


def test_limits_are_enforced_with_a_reason(client):
    big = encode_image(Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)), "PNG")
    assert len(big) > 1_000_000
    result = client.post("/detect", files=[("files", ("big.png", big, "image/png"))]).json()["results"][0]
    assert result["error"] == "upload is over the 0.954 MB limit"

    small = encode_image(photo(2, 32), "PNG")
    too_many = client.post("/detect", files=[("files", (f"{i}.png", small, "image/png")) for i in range(5)])
    assert too_many.status_code == 413 and "limit is 4" in too_many.json()["detail"]
    assert client.post("/detect").status_code == 422  # no files at all


def test_cli_reports_a_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", str(tmp_path / "nope")])
    assert "cannot load model" in str(exit_info.value.code)


def test_aigi_serve_answers_over_http(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aigi.cli", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):  # the model loads first: wait up to a minute
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
            assert server.poll() is None, server.stdout.read()
        files = [("files", ("x.jpg", encode_image(photo(3), "JPEG"), "image/jpeg"))]
        result = httpx.post(f"{url}/detect", files=files, timeout=30).json()["results"][0]
        assert result["path"] == "x.jpg" and 0.0 <= result["p_fake"] <= 1.0 and result["verdict"]
    finally:
        server.terminate()
        server.wait(timeout=10)
