"""The page at / in a real headless Chromium, against a real ``aigi serve`` on loopback.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them; ``apt-get install -y
chromium chromium-driver``) and Selenium; skips with the reason when either is missing.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="pip install 'aigi[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the test extra)")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from aigi.serve.handling import score_uploads  # noqa: E402
from conftest import encode_image  # noqa: E402
from serving import running_server  # noqa: E402
from synthetic import SHARED_DATA, synthetic_image  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600")


def _find(*names: str) -> str | None:
    return next((p for n in names if (p := shutil.which(n) or (n if os.path.isabs(n) and os.access(n, os.X_OK) else None))), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = _find("chromium", "chromium-browser", "google-chrome", "/usr/lib/chromium/chromium")
    driver_path = _find("chromedriver", "/usr/lib/chromium/chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no headless Chromium here: apt-get install -y chromium chromium-driver "
                    f"(found chromium={chromium}, chromedriver={driver_path})")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    try:  # an explicit driver path: Selenium Manager must not try to download one
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    except WebDriverException as e:
        pytest.skip(f"Chromium did not start ({chromium}, {driver_path}): {e.msg}")
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(log=tmp_path_factory.mktemp("serve") / "serve.log") as (url, _):
        yield url


def make_images(folder: Path) -> list[Path]:
    """A JPEG, a PNG, a wide WebP and a text file named .jpg (the error case)."""
    rng = np.random.default_rng(7)
    files = {"photo.jpg": ("JPEG", 640), "drawing.png": ("PNG", 300), "wide.webp": ("WEBP", 900)}
    paths = []
    for name, (fmt, size) in files.items():
        im = synthetic_image(rng, fake=fmt == "PNG", size=size)
        if name == "wide.webp":
            im = im.resize((size, size // 3))
        (folder / name).write_bytes(encode_image(im, fmt))
        paths.append(folder / name)
    (folder / "notes.jpg").write_text("shopping list: eggs, milk\n")
    return [*paths, folder / "notes.jpg"]


def upload(browser, url: str, paths: list[Path]) -> list[dict]:
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda d: "Model default" in d.find_element(By.ID, "limits").text)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    WebDriverWait(browser, 120).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card:not([data-state=pending])")) == len(paths))
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    return [{"name": c.get_attribute("data-name"), "state": c.get_attribute("data-state"),
             "verdict": c.get_attribute("data-verdict"), "p_fake": c.get_attribute("data-p-fake"),
             "text": c.text} for c in cards]


def downloaded_csv(browser, folder: Path) -> list[dict]:
    """Click "Download CSV" and read the file Chromium saves."""
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
    browser.find_element(By.ID, "csv").click()
    target = folder / "aigi-results.csv"
    WebDriverWait(browser, 30).until(lambda d: target.exists() and target.stat().st_size > 0)
    return list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))


def check_same_origin(browser, url: str) -> None:
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [r for r in resources if not r.startswith((url, "blob:", "data:"))]
    assert not outside, f"the page fetched from elsewhere: {outside}"


def test_page_scores_dropped_images_and_reports_the_bad_one(browser, server, tmp_path):
    paths = make_images(tmp_path)
    cards = upload(browser, server, paths)
    assert [c["name"] for c in cards] == [p.name for p in paths]
    expected = score_uploads(_detector(), [(p.name, p.read_bytes()) for p in paths])
    for card, want in zip(cards[:3], expected[:3]):
        assert card["state"] == "done" and card["verdict"] == want.verdict
        assert float(card["p_fake"]) == pytest.approx(want.p_fake, abs=1e-5)
        assert f"{want.p_fake:.4f}" in card["text"]
        assert ("AI-generated" if want.verdict == "ai-generated" else "Camera photo") in card["text"]
        if want.generator:
            assert want.generator in card["text"]
    assert cards[3]["state"] == "error" and "not an image Pillow can identify" in cards[3]["text"]
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("4 of 4 image(s) done: 3 scored") and "1 could not be scored" in status

    rows = downloaded_csv(browser, tmp_path / "downloads")
    assert [r["path"] for r in rows] == [p.name for p in paths]
    assert [r["verdict"] for r in rows[:3]] == [w.verdict for w in expected[:3]] and rows[3]["error"]
    assert float(rows[0]["p_fake"]) == pytest.approx(expected[0].p_fake, abs=1e-5)
    # Every control has a label, and the file picker is reachable from the keyboard.
    assert browser.find_element(By.CSS_SELECTOR, "label[for=files]").text
    assert browser.find_element(By.ID, "files").get_attribute("tabindex") in (None, "0")
    check_same_origin(browser, server)
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_draws_the_heatmap_evidence_and_uncertainty_when_the_model_gives_them(browser, server, tmp_path):
    """The fields newer models add (crops, image_size, too_small, evidence, verdict "uncertain"),
    rendered from a result shaped as the API documents them: the boxes are drawn over the image."""
    paths = make_images(tmp_path)
    upload(browser, server, paths[:1])
    boxes = browser.execute_script("""
        const card = document.querySelector('#results .card');
        const result = {path: 'photo.jpg', p_fake: 0.52, verdict: 'uncertain', pixel_verdict: 'real',
          reason: 'pixel verdict stands', generator: '', p_generator: null,
          generator_probs: {}, error: '', image_size: [640, 640], too_small: false,
          crops: [{box: [0, 0, 320, 320], p_fake: 0.1}, {box: [320, 0, 640, 320], p_fake: 0.9},
                  {box: [0, 320, 640, 640], p_fake: 0.5}],
          evidence: {software: 'Stable Diffusion web UI', c2pa: {claim_generator: 'example'}}};
        window.aigi.renderResult(card, result, 0.5);
        return new Promise(done => setTimeout(() => done(card.querySelector('canvas').dataset.boxes), 200));
    """)
    assert boxes == "3"
    card = browser.find_element(By.CSS_SELECTOR, "#results .card")
    assert card.get_attribute("data-verdict") == "uncertain" and "Uncertain" in card.text
    assert "Stable Diffusion web UI" in card.text and "claim generator" in card.text
    assert "pixels alone" in card.text and "pixel verdict stands" in card.text
    assert "real 0" in card.find_element(By.CLASS_NAME, "legend").get_attribute("textContent")
    # Pixels under the second box are red-ish, under the first blue-ish: the colours follow p_fake.
    red, blue = browser.execute_script("""
        const c = document.querySelector('#results .card canvas'), g = c.getContext('2d');
        const at = (fx, fy) => Array.from(g.getImageData(fx * c.width, fy * c.height, 1, 1).data);
        return [at(0.75, 0.25), at(0.25, 0.25)];
    """)
    assert red[0] > red[2] and blue[2] > blue[0]
    browser.save_screenshot(str(tmp_path / "heatmap.png"))


# Evidence shaped as aigi.forensics.evidence.Evidence.to_dict() gives it for a PNG with
# AUTOMATIC1111 parameters, camera EXIF and a C2PA manifest.
EVIDENCE = {
    "name": "painting.png", "format": "PNG",
    "c2pa": {"validation_state": "Valid", "validates": True, "trusted": False, "signer": "Example Signer Inc",
             "claim_generator": "Adobe Firefly 2.0", "actions": [{"action": "c2pa.created",
             "digital_source_type": "trainedAlgorithmicMedia"}], "ai_declaration": None, "ingredients": []},
    "digital_source_types": [{"type": "trainedAlgorithmicMedia", "where": "XMP"}],
    "generator": {"tool": "AUTOMATIC1111", "where": "PNG tEXt", "keys": ["parameters"],
                  "fields": {"Steps": "30", "Sampler": "DPM++ 2M Karras", "CFG scale": "7", "Seed": "2468"},
                  "excerpt": "a painting of mountains at sunset, by Albert Bierstadt Negative prompt: blurry"},
    "exif": {"Make": "Apple", "Model": "iPhone 13", "Software": "16.1.1", "DateTime": "2023:05:01 10:00:00"},
    "texts": [{"key": "parameters", "where": "PNG tEXt", "excerpt": "a painting of mountains at sunset"}],
    "problems": [], "reason": "PNG tEXt 'parameters' holds AUTOMATIC1111 generation parameters", "empty": False,
}

BROKEN_WORDS = """
    // Words of the evidence table that the layout broke across lines ("for/mat"): a word whose
    // characters lie on more than one line. Tokens longer than 24 characters may break.
    const broken = [];
    const walker = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.textContent.matchAll(/\\S+/g)) {
        if (m[0].length > 24) continue;
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
    return broken;
"""


@pytest.mark.parametrize("width", [1280, 420])
def test_evidence_table_is_readable_whole_words_and_no_raw_json(browser, server, tmp_path, width):
    paths = make_images(tmp_path)
    browser.set_window_size(width, 1600)
    try:
        upload(browser, server, paths[:1])
        browser.execute_script("""
            const card = document.querySelector('#results .card');
            window.aigi.renderResult(card, {path: 'painting.png', p_fake: 0.93, verdict: 'ai-generated',
              pixel_verdict: 'ai-generated', reason: 'generator parameters', generator: 'deliberate-2-0',
              p_generator: 0.9, generator_probs: {}, error: '', image_size: [640, 640], too_small: false,
              crops: [], evidence: arguments[0]}, 0.69);
        """, EVIDENCE)
        table = browser.find_element(By.CSS_SELECTOR, "#results .card table.evidence")
        text = table.text
        assert not any(raw in text for raw in ('{"', '":', '[{', '"]')), f"raw JSON in the evidence table: {text}"
        broken = browser.execute_script(BROKEN_WORDS, table)
        assert not broken, f"words broken mid-word at {width} px: {broken}"
        for shown in ("Format", "PNG", "AUTOMATIC1111", "DPM++ 2M Karras", "2468", "Apple", "iPhone 13",
                      "Adobe Firefly 2.0", "Example Signer Inc", "trainedAlgorithmicMedia"):
            assert shown in text, (shown, text)
        browser.save_screenshot(str(tmp_path / f"evidence-{width}.png"))
    finally:
        browser.set_window_size(1280, 1600)


def test_page_scores_shared_dataset_images(browser, server, tmp_path):
    picked = []
    for archive, prefix in (("real-photos-dev.zip", "real/"), ("sd15-styles.zip", "fake/")):
        path = SHARED_DATA / archive
        if not path.exists():
            pytest.skip(f"{path} is absent: this test needs the shared datasets beside the checkout")
        with zipfile.ZipFile(path) as zf:
            member = sorted(n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/"))[0]
            target = tmp_path / Path(member).name
            target.write_bytes(zf.read(member))
            picked.append(target)
    cards = upload(browser, server, picked)
    expected = score_uploads(_detector(), [(p.name, p.read_bytes()) for p in picked])
    for card, want in zip(cards, expected):
        assert card["state"] == "done" and card["verdict"] == want.verdict
        assert float(card["p_fake"]) == pytest.approx(want.p_fake, abs=1e-5)
    browser.save_screenshot(str(tmp_path / "shared.png"))


def test_docs_page_renders_offline(browser, server):
    browser.get(server + "/docs")
    WebDriverWait(browser, 60).until(lambda d: "/v1/detect" in d.find_element(By.TAG_NAME, "body").text)
    check_same_origin(browser, server)


_DETECTOR = []


def _detector():
    if not _DETECTOR:
        from aigi.detector.model import Detector

        _DETECTOR.append(Detector.from_pretrained("default"))
    return _DETECTOR[0]
