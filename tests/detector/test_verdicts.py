"""Three outcomes, unknown generators, thresholds chosen without retraining, evidence in every output."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from aigi.cli.main import main
from aigi.detector.scoring import OperatingPoint, Prediction, decide
from aigi.detector.thresholds import apply_operating_point, choose_threshold, uncertain_band
from aigi.training.calibration import calibrate, generator_confidence, open_set_threshold

A1111 = ("a lighthouse at dusk\nSteps: 28, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 48x48, "
         "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly")


def png_bytes(colour=(90, 120, 200), texts: dict | None = None, size=(48, 48)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (texts or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the band


def test_band_is_the_narrowest_holding_half_the_errors():
    real = [0.1, 0.2, 0.55, 0.9]  # false positives at 0.55 and 0.9
    fake = [0.05, 0.45, 0.6, 0.8, 0.95]  # false negatives at 0.05 and 0.45
    band = uncertain_band(real, fake, 0.5)
    # 4 errors, half = 2: {0.45, 0.55} is narrower than {0.45, 0.05} or {0.55, 0.9}.
    assert (band["low"], band["high"]) == (0.45, 0.55)
    assert band["n_errors"] == 4 and band["errors_in_band"] == 2
    assert band["val_share_in_band"] == pytest.approx(2 / 9)
    assert band["accuracy_outside_band"] == pytest.approx(5 / 7)  # 0.05 and 0.9 stay wrong
    assert "half" in band["rule"] or "50%" in band["rule"]


def test_band_on_one_side_and_without_errors():
    assert uncertain_band([0.1, 0.2], [0.8, 0.9], 0.5) is None  # nothing wrong: no band
    band = uncertain_band([0.1, 0.6, 0.7], [0.8, 0.9], 0.5)  # false positives only
    assert band["low"] == 0.5 and band["high"] == 0.6


def test_band_holds_the_stated_share_on_random_scores():
    rng = np.random.default_rng(0)
    real, fake = rng.beta(2, 5, 500), rng.beta(5, 2, 500)
    for share in (0.25, 0.5, 0.9):
        band = uncertain_band(real, fake, 0.5, share)
        assert band["low"] <= 0.5 <= band["high"]
        assert band["errors_in_band"] >= share * band["n_errors"]


def test_calibrate_stores_band_and_open_set_and_a_moved_threshold_moves_the_band(model_dir):
    from aigi.detector.model import Detector

    detector = Detector.from_pretrained(model_dir)
    detector.labels = ["real", "genA", "genB"]  # the rule needs two generators or more
    rng = np.random.default_rng(1)
    y = np.array([0] * 200 + [1] * 200)
    p = np.clip(np.where(y == 1, rng.beta(5, 2, 400), rng.beta(2, 5, 400)), 1e-4, 1 - 1e-4)
    probs = rng.dirichlet([1, 3, 1], 400)
    info = calibrate(detector, p, y, generator_probs=probs)
    band, open_set = detector.config["uncertain_band"], detector.config["open_set"]
    assert band == info["uncertain_band"] and band["low"] <= detector.threshold <= band["high"]
    kept = (generator_confidence(probs)[y == 1] >= open_set["threshold"]).mean()
    assert kept >= 0.95 and open_set["known_kept"] == 0.95
    detector.config["training"] = {"calibration": info}
    apply_operating_point(detector, target_fpr=0.05)
    real = np.asarray(info["val_real_p_fake"])
    assert (real >= detector.threshold).mean() <= 0.05
    assert detector.config["uncertain_band"]["threshold"] == detector.threshold  # re-derived around it


def test_target_fpr_needs_stored_real_scores():
    with pytest.raises(ValueError, match="no held-out scores of real images"):
        choose_threshold({"threshold": 0.5}, target_fpr=0.01, model="model x")
    with pytest.raises(ValueError, match="not both"):
        choose_threshold({}, threshold=0.5, target_fpr=0.01)
    assert choose_threshold({}, threshold=0.7) == 0.7
    assert open_set_threshold([]) is None


# ----------------------------------------------------------------------------- decide


def _scored(p_fake: float, gen_probs=(0.2, 0.5, 0.3), evidence=None) -> Prediction:
    return Prediction("x.png", p_fake=p_fake, generator_probs=dict(zip(["real", "genA", "genB"], gen_probs)),
                      evidence=evidence)


def test_decide_three_outcomes_and_unknown_generator():
    labels = ["real", "genA", "genB"]
    point = OperatingPoint(0.5, band=(0.4, 0.6), open_set_threshold=0.7)
    assert decide(_scored(0.45), labels, point).verdict == "uncertain"
    assert decide(_scored(0.3), labels, point).verdict == "real"
    fake = decide(_scored(0.9), labels, point)
    # genA has 0.5 / 0.8 = 0.625 of the generators' probability: under 0.7, so "unknown".
    assert fake.verdict == "ai-generated" and fake.generator == "unknown"
    assert fake.p_generator == pytest.approx(0.625) and fake.p_fake == 0.9
    known = decide(_scored(0.9, (0.1, 0.85, 0.05)), labels, point)
    assert known.generator == "genA"
    # Without a band and an open-set threshold the model decides as before.
    old = decide(_scored(0.45), labels, OperatingPoint(0.5))
    assert old.verdict == "real" and decide(_scored(0.9), labels, OperatingPoint(0.5)).generator == "genA"


def test_the_generator_column_never_names_a_training_aid_and_prefers_what_the_file_says():
    labels = ["real", "aligned-taesd3", "genA"]
    aid_on_top = decide(_scored(0.9, (0.1, 0.7, 0.2)), labels, OperatingPoint(0.5))
    assert aid_on_top.generator == "genA" and aid_on_top.p_generator == pytest.approx(1.0)
    from aigi.forensics.evidence import read_evidence

    evidence = read_evidence(png_bytes(texts={"parameters": A1111}), "a.png").to_dict()
    named = decide(_scored(0.2, evidence=evidence), ["real", "genA", "genB"], OperatingPoint(0.5))
    assert named.verdict == "ai-generated" and named.p_generator is None
    assert named.generator == f"{evidence['generator']['fields']['Model']} (AUTOMATIC1111)"
    c2pa = {"c2pa": {"validates": True, "ai_declaration": {"digital_source_type": "trainedAlgorithmicMedia",
                                                           "software_agent": "Adobe Firefly"}}}
    assert decide(_scored(0.9, evidence=c2pa), labels, OperatingPoint(0.5)).generator == "Adobe Firefly (C2PA)"


def test_evidence_decides_the_final_verdict_and_p_fake_is_kept():
    from aigi.forensics.evidence import read_evidence

    evidence = read_evidence(png_bytes(texts={"parameters": A1111}), "a.png").to_dict()
    pred = decide(_scored(0.2, evidence=evidence), ["real", "genA", "genB"], OperatingPoint(0.5))
    assert pred.pixel_verdict == "real" and pred.verdict == "ai-generated" and pred.p_fake == 0.2
    assert "AUTOMATIC1111" in pred.reason and "overridden" in pred.reason
    assert pred.generator == "v1-5-pruned-emaonly (AUTOMATIC1111)"  # the generator the file itself names


# ----------------------------------------------------------------------------- outputs


@pytest.fixture
def evidence_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "params.png").write_bytes(png_bytes((200, 60, 60), {"parameters": A1111}))
    (folder / "plain.png").write_bytes(png_bytes((60, 200, 60)))
    return folder


def test_detect_carries_evidence_into_csv_jsonl_and_the_table(model_dir, evidence_folder, tmp_path, capsys):
    args = ["detect", str(evidence_folder), "--model", str(model_dir), "--threshold", "0.999"]
    assert main(args) == 0
    out = capsys.readouterr()
    table = {line.split()[-1] if "(" not in line else line.split("  (")[0].split()[-1]: line
             for line in out.out.splitlines()[1:] if line.strip()}
    assert "pixels alone: real; decided by AUTOMATIC1111 parameters" in table[str(evidence_folder / "params.png")]
    assert "1 verdict(s) decided by the file's metadata" in out.err and "threshold 0.999" in out.err
    assert main([*args, "--out", str(tmp_path / "r.csv"), "-q"]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "r.csv"))}
    assert rows["params.png"]["verdict"] == "ai-generated" and rows["params.png"]["pixel_verdict"] == "real"
    assert rows["params.png"]["evidence"] == "AUTOMATIC1111 parameters (PNG tEXt)"
    assert rows["plain.png"]["verdict"] == rows["plain.png"]["pixel_verdict"] == "real"
    assert main([*args, "--out", str(tmp_path / "r.jsonl"), "-q"]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, open(tmp_path / "r.jsonl"))}
    assert rows["params.png"]["evidence"]["generator"]["tool"] == "AUTOMATIC1111"
    assert "AUTOMATIC1111" in rows["params.png"]["reason"]
    # --no-evidence: the pixel verdict is final and nothing is read from the metadata.
    assert main([*args, "--out", str(tmp_path / "n.jsonl"), "-q", "--no-evidence"]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, open(tmp_path / "n.jsonl"))}
    assert rows["params.png"]["verdict"] == "real" and rows["params.png"]["evidence"] is None


def test_target_fpr_without_stored_scores_fails_in_one_line(model_dir, evidence_folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect", str(evidence_folder), "--model", str(model_dir), "--target-fpr", "0.01"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no held-out scores of real images" in err and err.count("\n") == 1


def test_bytes_are_read_once_for_pixels_and_evidence(model_dir, evidence_folder, monkeypatch):
    import aigi.io.inputs
    from aigi.detector.model import Detector

    calls = []
    real_read = aigi.io.inputs.read_bytes
    monkeypatch.setattr(aigi.io.inputs, "read_bytes", lambda s, *a: calls.append(s.display) or real_read(s, *a))
    opened = []
    import builtins

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    detector = Detector.from_pretrained(model_dir)
    opened.clear()
    path = str(evidence_folder / "params.png")
    (pred,) = detector.predict([path])
    assert calls == [path] and opened.count(path) == 1
    assert pred.evidence["generator"]["tool"] == "AUTOMATIC1111"
    # Bytes and PIL images: bytes carry evidence, a decoded image has none to give.
    (from_bytes,) = detector.predict([("params.png", (evidence_folder / "params.png").read_bytes())])
    assert {**from_bytes.evidence, "name": path} == pred.evidence and from_bytes.p_fake == pytest.approx(pred.p_fake)
    (from_pil,) = detector.predict([Image.open(path)])
    assert from_pil.evidence is None and from_pil.verdict == from_pil.pixel_verdict


def test_serve_results_have_evidence_and_per_request_thresholds(model_dir, evidence_folder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from aigi.detector.model import Detector
    from aigi.serve.app import create_app

    client = TestClient(create_app(Detector.from_pretrained(model_dir)))
    files = [("files", ("params.png", (evidence_folder / "params.png").read_bytes(), "image/png"))]
    body = client.post("/v1/detect?threshold=0.999", files=files).json()
    (r,) = body["results"]
    assert body["threshold"] == 0.999 and r["pixel_verdict"] == "real" and r["verdict"] == "ai-generated"
    assert r["evidence"]["generator"]["tool"] == "AUTOMATIC1111" and "AUTOMATIC1111" in r["reason"]
    low = client.post("/v1/detect?threshold=0.001", files=files).json()
    assert low["results"][0]["pixel_verdict"] == "ai-generated" and low["threshold"] == 0.001
    bad = client.post("/v1/detect?target_fpr=0.01", files=files)
    assert bad.status_code == 422 and "no held-out scores" in bad.json()["error"]["message"]
    assert client.post("/v1/detect?threshold=2", files=files).status_code == 422


def test_training_stores_the_decision_rules(tmp_path):
    from synthetic import make_dataset

    from aigi.detector.model import Detector
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    data = make_dataset(tmp_path / "ds", n_per_class=30, generators=("genA", "genB"))
    out = train(TrainConfig(data=str(data), out=str(tmp_path / "m"), backbone="tiny-clip", epochs=1, batch_size=16,
                            workers=0, progress=False, augment="none", precision="fp32", lr=1e-3))
    config = json.loads((out / "config.json").read_text())
    cal = config["training"]["calibration"]
    assert cal["val_real_p_fake"] and cal["val_fake_p_fake"] and cal["val_fake_p_generator"]
    assert config["open_set"]["threshold"] == pytest.approx(np.quantile(cal["val_fake_p_generator"], 0.05, method="lower"),
                                                            abs=1e-6)
    errors = sum(p >= config["threshold"] for p in cal["val_real_p_fake"]) + sum(
        p < config["threshold"] for p in cal["val_fake_p_fake"])
    assert ("uncertain_band" in config) == bool(errors)
    point = Detector.from_pretrained(out).operating_point
    assert point.open_set_threshold == config["open_set"]["threshold"]


def test_openset_benchmark_folds_and_report():
    from benchmarks.openset import render_all, split_rows

    rows = [{"path": f"/d/generators-dev.zip::fake/{g}/{i}.jpg", "label": 1, "generator": g, "family": fam}
            for g, fam in (("dalle-2", "openai"), ("sd-v1-4", "sd1")) for i in range(40)]
    rows.append({"path": "/d/real-photos-dev.zip::real/a.jpg", "label": 0, "generator": "real", "family": "real"})
    unknown, known, val = split_rows(rows, "openai")
    assert len(unknown) == 40 and {r["family"] for r in known + val} == {"sd1"}
    assert all(r["label"] == 1 for r in unknown + known + val) and len(known) + len(val) < 40
    fold = {"n_unknown": 40, "n_known": 5, "auroc_p_generator": 0.7, "auroc_neg_entropy": None, "threshold": 0.1,
            "unknown_flagged": 0.2, "known_kept": 0.95, "threshold_source": "stored in the model"}
    text = render_all({"x": {"folds": {"openai": fold}, "small": True}, "y": {"folds": {}}})
    assert text.startswith("## Open-set attribution") and "### x" in text and "### y" not in text
    assert "| openai | 40 | 5 | 0.700 | n/a |" in text
