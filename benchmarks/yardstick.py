"""The cross-source yardstick: recipes trained on some sources, judged on sources they never met.

    aigi data build                                          # the packs (once; kept where built)
    python -m benchmarks.yardstick run                       # every recipe of RECIPES, in one run
    python -m benchmarks.yardstick run --recipes default,probe-stats
    python -m benchmarks.yardstick report                    # results -> BENCHMARKS.md

**Sources, not images, are held out.** Every image of the packs (``aigi data build``) belongs
to one source (a repository or archive and the pipeline that made it; ``src/aigi/io/sources.toml``
says which, with its licence), and every source to one split, for both classes alike:

- ``test``: about a third of the sources, spread over generator families and camera kinds;
  never trained on, never used to choose or calibrate anything: the headline figures;
- ``val``: other sources, for choosing a recipe and for calibration (temperature, threshold,
  uncertain band): camera photos and real generators' images only;
- ``train``: the rest. One image in ten of the train sources (the public hash rule) is held
  back as an *in-source* test set: the kind of yardstick the old figures used, kept as a
  secondary row to show how much it flatters.

A recipe is trained by ``aigi train`` on a manifest of the train split (its ``split`` column
fixing each row's split), calibrated on the val split, then every held-out image is scored
through :meth:`aigi.Detector.predict`, clean and under each perturbation of
:data:`PERTURBATIONS` (made once per image and shared by every model, applied to real and fake
alike). The figures (:mod:`benchmarks.yardstick_metrics`) are per held-out source, then the
mean over sources. Probe recipes on one encoder share one *pool* of encoded draws (every
augmentation policy, every image any of them trains on): each fits its heads on the pool's
rows of its own images and policies (``aigi train --probe-features``), so ablations cost a fit,
not an encoding.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .harness import RESULTS, SHARED, add_report, log, machine, publish, read_results, run_subcommand, subcommands
from .harness import write_results
from .perturb import perturb
from .yardstick_metrics import set_metrics

OUT_JSON = RESULTS / "yardstick.json"
CACHE = Path(os.environ.get("AIGI_CACHE") or Path.home() / ".cache" / "aigi")
WORK = CACHE / "yardstick"
DATA = SHARED / "data"
PERTURBATIONS = ("none", "jpeg75", "reshare", "resize0.5")
ALL_POLICIES = "clean+jpeg+resize+reshare+blurnoise+half"
DINOV2 = os.environ.get("AIGI_DINOV2", str(SHARED / "zoo" / "dinov2-s14-imgfocus"))
CIFAKE_PER_CLASS = 1500


@dataclass
class Recipe:
    what: str
    train: dict  # TrainConfig fields
    cifake: int = 0  # a CIFAKE train sample of this many per class (the 32 px band)
    aligned: bool = False  # aigi synth aligned fakes of a sample of the train reals
    pool: str | None = None  # the pool of encoded draws it fits on (probe recipes)
    perturbations: tuple[str, ...] = PERTURBATIONS


def _probe(backbone: str, augment: str, **kw) -> dict:
    base = dict(backbone=backbone, tune="probe", image_size=224, crops=4, scales=(1.0,), epochs=6, epoch_images=4000,
                batch_size=32, augment=augment, small_share=0.15, workers=1, probe_l2=3e-4, target_fpr=0.02,
                precision="fp32")
    return {**base, **kw}


EFF = "efficientnet-lite0-stats"
# Pools: every policy, every image any recipe on that encoder draws on (aligned fakes, CIFAKE).
POOLS = {
    "pool-effstats": Recipe("pool of EfficientNet-Lite0 block-statistics draws", _probe(EFF, ALL_POLICIES, epochs=8),
                            cifake=CIFAKE_PER_CLASS, aligned=True),
}
RECIPES: dict[str, Recipe] = {
    "probe-stats": Recipe(
        "today's bundled recipe, retrained on the yardstick's train split: frozen EfficientNet-Lite0 block "
        "statistics, L-BFGS heads on 24,000 robustly augmented draws, 224 px crops at native and half scale (2 of "
        "each), aligned fakes, a CIFAKE sample, threshold at 3% of val reals",
        dict(backbone=EFF, tune="probe", image_size=224, crops=2, scales=(1.0, 0.5), epochs=6, epoch_images=4000,
             batch_size=64, augment="robust", small_share=0.15, workers=1, probe_l2=3e-4, target_fpr=0.03,
             precision="fp32"),
        cifake=3000, aligned=True),
    "plain-probe": Recipe("the floor: the same frozen features, clean and JPEG-re-encoded native crops, no aligned "
                          "fakes, no CIFAKE, 4 native crops at scoring", _probe(EFF, "clean+jpeg"), pool="pool-effstats"),
}
DEFAULT_RECIPES = tuple(RECIPES)


# ----------------------------------------------------------------------------- data


def pack_rows(cache: Path = CACHE) -> list[dict]:
    """Every image of every pack: path (``pack.zip::member``), label, generator, family, source
    (the yardstick's unit), pack, split (``train``, ``val``, ``test``, or ``in-source`` for the one
    train image in ten held back)."""
    from aigi.io.packs import read_csv
    from aigi.io.samples import split_of
    from aigi.io.sources import load_sources

    packs = cache / "packs"
    sources = load_sources(shared=DATA)
    missing = [s.name for s in sources.sources if not (packs / f"{s.name}.csv").exists()]
    if missing:
        raise SystemExit(f"yardstick: {len(missing)} pack(s) not built ({', '.join(missing[:5])}...): run "
                         f"aigi data build --cache {cache}")
    rows = []
    for s in sources.sources:
        for r in read_csv(packs / f"{s.name}.csv"):
            split = s.split
            if split == "train" and split_of(r["member"]) == "test":
                split = "in-source"
            rows.append(dict(path=f"{packs / s.name}.zip::{r['member']}", label=int(r["label"] == "fake"),
                             generator=r["generator"] or "real", family=r["family"], source=s.unit, pack=s.name,
                             split=split, kind=r["kind"]))
    return rows


def cifake_rows(n: int) -> list[dict]:
    """A fixed sample of CIFAKE's train split, ``n`` per class (train rows)."""
    from aigi.io.datasets import load_dataset

    data = load_dataset(DATA / "cifake-dev.zip", "train")
    rng = np.random.default_rng(0)
    rows = []
    for label in (0, 1):
        members = [s for s in data.samples if s.label == label]
        for i in sorted(rng.choice(len(members), size=min(n, len(members)), replace=False)):
            rows.append(dict(path=members[i].display, label=label, generator=members[i].generator, family="cifake",
                             source="cifake", pack="cifake", split="train", kind="32 px"))
    return rows


def aligned_rows(rows: list[dict], work: Path = WORK) -> list[dict]:
    """Aligned fakes (``aigi synth aligned``, five tiny autoencoders) of up to 20 photos of each train
    source, made once into the cache (resumed if cut); their fakes are train rows."""
    import subprocess
    import zipfile

    out = work / "aligned"
    picked = sorted((r for r in rows if r["split"] == "train" and r["label"] == 0),
                    key=lambda r: (r["pack"], __import__("hashlib").sha1(r["path"].encode()).hexdigest()))
    per: dict[str, list[dict]] = {}
    for r in picked:
        per.setdefault(r["pack"], []).append(r)
    chosen = [r for pack in per.values() for r in pack[:20]]
    source = work / "aligned-reals.zip"
    if not (out / ".complete").exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(source, "w") as zf:
            for r in chosen:
                archive, member = r["path"].split("::", 1)
                with zipfile.ZipFile(archive) as src:
                    zf.writestr(f"real/{r['pack']}/{Path(member).name}", src.read(member))
        subprocess.run([sys.executable, "-m", "aigi.cli", "synth", "aligned", str(source), "--autoencoder", "all",
                        "--out", str(out), "--max-side", "512", "-q"], check=True)
        (out / ".complete").write_text("ok\n")
    fakes = []
    for f in sorted((out / "fake").rglob("*.jpg")):
        ae = f.relative_to(out / "fake").parts[0]
        fakes.append(dict(path=str(f), label=1, generator=f"aligned-{ae}", family="aligned", source="aligned",
                          pack="aligned", split="train", kind="aligned"))
    return fakes


def recipe_rows(recipe: Recipe, rows: list[dict]) -> list[dict]:
    """What a recipe trains and calibrates on: the train and val splits, plus its extras."""
    data = [r for r in rows if r["split"] in ("train", "val")]
    if recipe.cifake:
        data += cifake_rows(recipe.cifake)
    if recipe.aligned:
        data += aligned_rows(rows)
    return data


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "generator", "split"])
        for r in rows:
            w.writerow([r["path"], r["label"], r["generator"], r["split"]])
    return path


# ----------------------------------------------------------------------------- training


def _finished(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return config.exists() and "training" in json.loads(config.read_text())


def train_recipe(name: str, rows: list[dict], recipes: dict[str, Recipe]) -> Path:
    """``aigi train`` of a recipe on its manifest (its pool first, if it has one); resumed where cut."""
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    recipe = recipes.get(name) or POOLS[name]
    out = WORK / name
    extra = {}
    if recipe.pool:
        extra["probe_features"] = str(train_recipe(recipe.pool, rows, recipes))
    if not _finished(out / "model"):
        manifest = write_manifest(recipe_rows(recipe, rows), out / "train.csv")
        log(f"yardstick: training {name}")
        train(TrainConfig(data=str(manifest), out=str(out / "model"), progress=True, resume=True,
                          **{**recipe.train, **extra}))
    return out / "model"


# ----------------------------------------------------------------------------- scoring


def score_sets(detectors: dict, rows: list[dict], perturbations: dict[str, tuple[str, ...]]) -> dict:
    """p_fake of every held-out image (test: under each model's perturbations; val and in-source:
    clean) -> figures per model, set and perturbation. Each perturbed image is made once."""
    from aigi.io.decode import read_image
    from aigi.io.datasets import load_dataset

    out: dict = {name: {} for name in detectors}
    for split in ("test", "val", "in-source"):
        held = [r for r in rows if r["split"] == split]
        manifest = write_manifest([{**r, "split": "test"} for r in held], WORK / f"held-{split}.csv")
        samples = load_dataset(manifest).samples
        images = [read_image(s) for s in samples]
        wanted = sorted({p for ps in perturbations.values() for p in ps}, key=PERTURBATIONS.index) if split == "test" else ["none"]
        for pert in wanted:
            shown = [perturb(im, pert) for im in images]
            for name, detector in detectors.items():
                if pert not in perturbations[name] and split == "test":
                    continue
                started = time.time()
                preds = detector.predict(shown, batch_size=16)
                p = np.array([np.nan if q.p_fake is None else q.p_fake for q in preds])
                m = set_metrics(held, p, detector.threshold)
                m["summary"]["score_s"] = round(time.time() - started, 1)
                out[name].setdefault(split, {})[pert] = m
                s = m["summary"]
                log(f"yardstick: {name} {split} {pert}: AUC {s['auc']} TPR@5% {s['tpr_at_5fpr']} "
                    f"real FPR {s['real_fpr']} ECE {s['ece_balanced']}")
    return out


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    from aigi.detector.model import Detector

    names = [n for n in args.recipes.split(",") if n] if args.recipes else list(DEFAULT_RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"yardstick: unknown recipe(s) {', '.join(unknown)} (known: {', '.join(RECIPES)})")
    rows = pack_rows()
    results = read_results(OUT_JSON)
    detectors, costs = {}, {}
    for name in names:
        started = time.time()
        model = train_recipe(name, rows, RECIPES)
        detectors[name] = Detector.from_pretrained(model)
        costs[name] = {"train_s": round(time.time() - started, 1), "model": str(model),
                       "training": detectors[name].config.get("training", {}).get("probe", {})}
    grid = score_sets(detectors, rows, {n: RECIPES[n].perturbations for n in names})
    counts = {split: {"images": sum(r["split"] == split for r in rows),
                      "sources": len({(r["source"], r["label"]) for r in rows if r["split"] == split})}
              for split in ("train", "val", "test", "in-source")}
    for name in names:
        results.setdefault("recipes", {})[name] = {
            "what": RECIPES[name].what, "config": RECIPES[name].train, "cifake": RECIPES[name].cifake,
            "aligned": RECIPES[name].aligned, "pool": RECIPES[name].pool, **costs[name], "sets": grid[name],
            "threshold": detectors[name].threshold, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "torch_threads": torch.get_num_threads()}
    results["counts"] = counts
    write_results(OUT_JSON, results)
    print(render(results))


# ----------------------------------------------------------------------------- report


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render(results: dict) -> str:
    from .yardstick_report import render as render_section

    return render_section(results, PERTURBATIONS)


def cmd_report(args: argparse.Namespace) -> None:
    publish(render(read_results(OUT_JSON)))


def main(argv: list[str] | None = None) -> None:
    parser, verbs = subcommands(__doc__)
    p = verbs.add_parser("run", help="train the recipes and score the held-out sources")
    p.add_argument("--recipes", default="", help=f"comma-separated (default: all: {', '.join(DEFAULT_RECIPES)})")
    p.set_defaults(func=cmd_run)
    add_report(verbs, cmd_report)
    run_subcommand(parser, argv)


if __name__ == "__main__":
    main()
