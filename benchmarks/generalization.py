"""Leave-one-generator-out: how a recipe does on generator families and cameras it never saw.

    python -m benchmarks.generalization run                      # every fold, the default recipe
    python -m benchmarks.generalization run --folds flux,openai  # a subset (results kept per fold)
    python -m benchmarks.generalization report                   # results -> BENCHMARKS.md

The data are every high-resolution set of ../shared/data: generators-dev (28 generator slugs),
sd15-styles, camera-photos-dev and real-photos-dev, plus optional aligned fakes
(``aigi synth aligned`` of those reals) and a CIFAKE sample, as the recipe says.

**Folds.** Generators are grouped into the families of shared/data/README.md (``FAMILIES``;
sd15-styles' two SD 1.5 fine-tunes join ``sd1``). Real photos are grouped by camera make
(camera-photos-dev, from its CSV) or by source (real-photos-dev: bsds500, sun_hays80,
urban100), and the groups are dealt into as many bins as there are families, largest first
onto the emptiest bin (``real_bins``). Fold k holds out family k and real bin k: the recipe
trains (and selects its epoch, and calibrates) on everything else, including the aligned fakes
of the training reals only, and is scored on the held-out family against the held-out reals.
No figure here rests on an image its model trained on or was selected with.

**Perturbations** (``PERTURBATIONS``) are applied to every held-out image, real and fake alike,
before scoring: JPEG 95/75/50 (4:2:0), resize 0.5 and 1.5 (bicubic), Gaussian blur sigma 1,
and a re-share (0.75x, then JPEG 80).

**Baselines, in the same run**: the aigi 0.1 default (64 px whole image, trained on CIFAKE +
sd15-styles + real-photos-dev; it saw the sd1 family and part of real-photos-dev, which favours
it), and the from-scratch CNN recipe of the accuracy benchmark (cnn-small, 32 px whole image),
trained on each fold's training data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .perturb import PERTURBATIONS, perturb  # noqa: F401 (re-exported for the benchmarks that use them)
from .harness import (RESULTS, ROOT, SHARED, add_report, machine, publish, read_results, row, run_subcommand,
                      subcommands, table, write_manifest, write_results)

DATA = SHARED / "data"
OUT_JSON = RESULTS / "generalization.json"
CACHE = Path(os.environ.get("AIGI_BENCH_CACHE", Path.home() / ".cache" / "aigi" / "bench"))
WORK = CACHE / "generalization"
ALIGNED = CACHE / "aligned-256"
DEFAULT_RUN = ROOT / "runs" / "default"  # the bundled default's training run (benchmarks/bundle_default.py)
HIGH_RES = ("generators-dev.zip", "sd15-styles.zip", "camera-photos-dev.zip", "real-photos-dev.zip")

FAMILIES = {
    "midjourney-v3": "midjourney", "dalle-2": "openai", "gpt-4o-image": "openai", "dalle-mini": "dalle-mini",
    "latent-diffusion-txt2img": "ldm", "glid-3-xl": "ldm", "disco-diffusion": "clip-guided",
    "majesty-diffusion": "clip-guided", "vqgan-clip-pixray": "clip-guided", "stable-diffusion-v1-beta": "sd1",
    "sd-v1-4": "sd1", "openjourney": "sd1", "sd15-anime-finetune": "sd1", "deliberate-2-0": "sd1",
    "dreamshaper-3-2": "sd1", "sd-v2-1": "sd2", "sd3-medium": "sd3", "sd3.5-large": "sd3", "flux1-dev": "flux",
    "flux1-schnell": "flux", "flux2-dev": "flux", "flux2-klein-4b": "flux", "flux2-klein-9b": "flux",
    "chroma": "flux", "auraflow": "other-dit", "hidream-i1": "other-dit", "hunyuan-dit": "other-dit",
    "lumina-image-2": "other-dit", "qwen-image": "other-dit", "z-image-turbo": "other-dit",
}
FOLD_FAMILIES = ("midjourney", "openai", "dalle-mini", "ldm", "clip-guided", "sd1", "sd2", "sd3", "flux", "other-dit")
MAKES = ("canon", "apple", "kodak", "nikon", "sony", "google", "panasonic", "olympus", "samsung", "minolta",
         "hewlett", "casio", "sanyo", "pentax", "asahi", "ricoh", "htc", "motorola")

# name -> (what it is, TrainConfig overrides, data options)
RECIPES: dict[str, tuple[str, dict, dict]] = {
    "probe-stats": (
        "frozen EfficientNet-Lite0 (ImageNet) with per-block mean/std statistics; linear heads fitted by L-BFGS on "
        "standardised features of 24,000 balanced, robustly augmented draws (--tune probe); 224 px crops at native "
        "and half scale, 2 of each per image; aligned fakes and a CIFAKE sample; threshold: at most 3% of the "
        "validation reals flagged (--target-fpr 0.03)",
        dict(backbone="efficientnet-lite0-stats", tune="probe", image_size=224, crops=2, scales=(1.0, 0.5), epochs=6,
             epoch_images=4000, batch_size=64, augment="robust", small_share=0.15, workers=1, max_val_images=600,
             probe_l2=3e-4, target_fpr=0.03),
        dict(aligned=True, cifake=6000)),
    "native-lite0": (
        "EfficientNet-Lite0 (ImageNet) fine-tuned on 224 px native crops, robust augmentation, balanced draws, "
        "aligned fakes and a CIFAKE sample",
        dict(backbone="efficientnet-lite0", tune="full", image_size=224, crops=4, epochs=6, epoch_images=3000, lr=2e-4,
             batch_size=32, augment="robust", small_share=0.15, workers=1, max_val_images=600),
        dict(aligned=True, cifake=6000)),
    "native-lite0-noaligned": (
        "as native-lite0, without aligned fakes",
        dict(backbone="efficientnet-lite0", tune="full", image_size=224, crops=4, epochs=6, epoch_images=3000, lr=2e-4,
             batch_size=32, augment="robust", small_share=0.15, workers=1, max_val_images=600),
        dict(aligned=False, cifake=6000)),
    "frozen-stats": (
        "frozen EfficientNet-Lite0 (ImageNet) with per-block mean/std statistics, linear heads, 224 px native crops, "
        "robust augmentation, balanced draws, aligned fakes and a CIFAKE sample",
        dict(backbone="efficientnet-lite0-stats", tune="linear", image_size=224, crops=4, epochs=8, epoch_images=4000,
             head_lr=1e-3, batch_size=64, augment="robust", small_share=0.15, workers=1, max_val_images=600),
        dict(aligned=True, cifake=6000)),
    "cnn-scratch": (
        "small CNN from scratch on 32 px whole images (the accuracy benchmark's baseline recipe; 8 epochs of 1,500 "
        "draws, so that ten folds fit in an afternoon on 2 cores)",
        dict(backbone="cnn-small", tune="full", native=False, image_size=32, epochs=8, epoch_images=1500, lr=1e-3,
             batch_size=64, augment="light", workers=1, max_val_images=600),
        dict(aligned=False, cifake=6000)),
}
DEFAULT_RECIPE = "probe-stats"  # the bundled default model's recipe (benchmarks/bundle_default.py)
BASELINE = "cnn-scratch"
OLD_DEFAULT = "aigi-0.1-64px"


# ----------------------------------------------------------------------------- data


def shared(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        raise SystemExit(f"{path} is absent: the generalization benchmark needs ../shared/data beside the checkout")
    return path


def aligned_dataset(path: Path = ALIGNED) -> Path:
    """The aligned fakes of every high-resolution real photo (``aigi synth aligned``, all five
    autoencoders, 256 px centre crops), made once (about 20 min on 2 CPU cores) and resumed
    if a run was cut. The paired split rule keeps each pair in its real photo's split."""
    import subprocess

    if not (path / "aigi-dataset.json").exists() or not (path / ".complete").exists():
        subprocess.run([sys.executable, "-m", "aigi.cli", "synth", "aligned", str(shared("camera-photos-dev.zip")),
                        str(shared("real-photos-dev.zip")), "--autoencoder", "all", "--out", str(path),
                        "--max-side", "256"], check=True)
        (path / ".complete").write_text("ok\n")
    return path


def camera_makes() -> dict[str, str]:
    """camera-photos-dev member -> normalised make (from the pack's CSV)."""
    makes = {}
    with open(shared("camera-photos-dev.csv"), newline="", encoding="utf-8") as f:
        for line in csv.DictReader(f):
            m = line["camera_make"].lower()
            makes[line["member"]] = next((k for k in MAKES if k in m), "other-make").replace("asahi", "pentax")
    return makes


def dev_rows(aligned_dir: Path | None) -> list[dict]:
    """Every high-resolution image: path (``zip::member`` or file), label, generator, family, real group."""
    makes = camera_makes()
    rows = []
    for name in HIGH_RES:
        archive = shared(name)
        with zipfile.ZipFile(archive) as zf:
            members = sorted(n for n in zf.namelist() if not n.endswith("/"))
        for m in members:
            parts = m.split("/")
            if parts[0] == "fake":
                rows.append(dict(path=f"{archive}::{m}", label=1, generator=parts[1], family=FAMILIES[parts[1]], group=""))
            else:
                rows.append(dict(path=f"{archive}::{m}", label=0, generator="real", family="real",
                                 group=makes.get(m, parts[1])))
    if aligned_dir is not None:
        for f in sorted(aligned_dir.rglob("*.*")):
            rel = f.relative_to(aligned_dir).as_posix()
            parts = rel.split("/")
            if parts[0] != "fake" or f.name.startswith("."):
                continue
            key = "real/" + "/".join(parts[2:])
            # The aligned fake of a real photo goes where its real goes: same real group.
            # "dataset::member": the paired split rule keeps it in its real photo's split.
            rows.append(dict(path=f"{aligned_dir}::{rel}", label=1, generator=f"aligned-{parts[1]}", family="aligned",
                             group=makes.get(key, parts[2])))
    return rows


def cifake_rows(n: int) -> list[dict]:
    """A fixed sample of CIFAKE's train split (n per class), for the small-image band."""
    from aigi.io.datasets import load_dataset

    data = load_dataset(shared("cifake-dev.zip"), "train")
    rng = np.random.default_rng(0)
    rows = []
    for label in (0, 1):
        members = [s for s in data.samples if s.label == label]
        for i in sorted(rng.choice(len(members), size=min(n, len(members)), replace=False)):
            s = members[i]
            rows.append(dict(path=s.display, label=label, generator=s.generator, family="cifake", group="cifake"))
    return rows


def real_bins(rows: list[dict], k: int) -> list[list[str]]:
    """Real groups dealt into ``k`` bins: largest group first, onto the bin with fewest photos."""
    counts = Counter(r["group"] for r in rows if r["label"] == 0 and r["family"] == "real")
    bins: list[list[str]] = [[] for _ in range(k)]
    totals = [0] * k
    for group, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])):
        i = int(np.argmin(totals))
        bins[i].append(group)
        totals[i] += n
    return bins


# ----------------------------------------------------------------------------- scoring


def fold_metrics(y: np.ndarray, p: np.ndarray, threshold: float, band: dict | None = None) -> dict:
    """AUC, TPR at 1% / 5% FPR of these reals, rates at the stored threshold, ECE, and (for a model
    with an uncertain band) the share of images in the band and of threshold errors it holds."""
    from sklearn.metrics import roc_auc_score

    from aigi.evaluation.metrics import expected_calibration_error

    real, fake = p[y == 0], p[y == 1]
    out = {"n_real": int(len(real)), "n_fake": int(len(fake)), "auc": None, "tpr_at_1fpr": None, "tpr_at_5fpr": None,
           "real_fpr": float((real >= threshold).mean()) if len(real) else None,
           "fake_recall": float((fake >= threshold).mean()) if len(fake) else None,
           "ece": expected_calibration_error(y, p) if len(p) else None}
    if band and band.get("low") is not None and len(p):
        inside = (p >= band["low"]) & (p <= band["high"])
        wrong = (p >= threshold) != (y == 1)
        out["band_share"] = float(inside.mean())
        out["band_error_share"] = float(inside[wrong].mean()) if wrong.any() else None
    if len(real) and len(fake):
        out["auc"] = float(roc_auc_score(y, p))
        for name, fpr in (("tpr_at_1fpr", 0.01), ("tpr_at_5fpr", 0.05)):
            # The threshold that flags at most `fpr` of the held-out reals, and the fakes above it.
            t = np.quantile(real, 1 - fpr, method="higher")
            out[name] = float((fake > t).mean())
    return out


def score_grid(detectors: dict, rows: list[dict], work: Path, perturbations=PERTURBATIONS) -> dict:
    """p_fake of every held-out image under every perturbation -> metrics per model and perturbation.
    Each perturbed image is made once and scored by every model (``detectors``: name -> Detector)."""
    from aigi.io.datasets import load_dataset
    from aigi.io.decode import read_image

    samples = load_dataset(write_manifest(rows, work / "held-out.csv")).samples
    images = [read_image(s) for s in samples]
    y = np.array([s.label for s in samples])
    out: dict = {name: {} for name in detectors}
    for pert in perturbations:
        perturbed = [perturb(im, pert) for im in images]
        for name, detector in detectors.items():
            preds = detector.predict(perturbed, batch_size=32)
            p = np.array([np.nan if q.p_fake is None else q.p_fake for q in preds])
            ok = ~np.isnan(p)
            out[name][pert] = fold_metrics(y[ok], p[ok], detector.threshold, detector.config.get("uncertain_band"))
    return out


def old_default():
    """The aigi 0.1 bundled model, kept as a registered name for this comparison."""
    from aigi.detector.model import Detector

    try:
        return Detector.from_pretrained(OLD_DEFAULT)
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------------------- run


def fold_rows(rows: list[dict], family: str, bin_groups: list[str]) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of one fold."""
    held = [r for r in rows if r["family"] == family or (r["family"] == "real" and r["group"] in bin_groups)]
    train = [r for r in rows if r["family"] != family and r["group"] not in bin_groups]
    return train, held


def all_rows(recipe: str, aligned: Path | None = None) -> list[dict]:
    """Every image a recipe draws on: the high-resolution sets, their aligned fakes and the
    CIFAKE sample, as the recipe's data options say (folds and the bundled default alike)."""
    _, _, data_opts = RECIPES[recipe]
    rows = dev_rows(aligned_dataset(aligned or ALIGNED) if data_opts["aligned"] else None)
    return rows + (cifake_rows(data_opts["cifake"]) if data_opts.get("cifake") else [])


def train_recipe(recipe: str, rows: list[dict], out: Path, progress: bool = False, **extra) -> Path:
    """``aigi train`` of a recipe on a manifest of ``rows`` (the split rule picks train and val),
    resumed where a killed run stopped; returns the model directory."""
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    manifest = write_manifest(rows, out / "train.csv")
    model = out / "model"
    if not _finished(model):
        train(TrainConfig(data=str(manifest), out=str(model), progress=progress, resume=True,
                          **{**RECIPES[recipe][1], **extra}))
    return model


def load_recipe_model(recipe: str, model: Path):
    """A recipe's trained model at the recipe's operating point: ``target_fpr`` sets the threshold from
    the model's stored validation reals, exactly as training with it does (so a run made before the
    recipe named one is scored as if it had)."""
    from aigi.detector.model import Detector
    from aigi.detector.thresholds import apply_operating_point

    detector = Detector.from_pretrained(model)
    apply_operating_point(detector, target_fpr=RECIPES[recipe][1].get("target_fpr"))
    return detector


def pool_run(recipe: str, rows: list[dict]) -> Path | None:
    """A probe recipe's run on every row, whose encoded draws each fold reuses (``--probe-features``:
    a fold keeps the rows of its own train images, importance-weighted to its own balance; the
    encoder is frozen, so this equals encoding the fold's own draws, at a tenth of the cost).
    The default recipe's pool is the bundled default's training run (benchmarks/bundle_default.py)."""
    if RECIPES[recipe][1].get("tune") != "probe":
        return None
    out = DEFAULT_RUN if recipe == DEFAULT_RECIPE else WORK / recipe / "pool"
    return train_recipe(recipe, rows, out, progress=True)


def run_fold(recipe: str, family: str, bin_groups: list[str], rows: list[dict], work: Path, baseline: bool,
             pool: Path | None) -> dict:
    train_rows, held = fold_rows(rows, family, bin_groups)
    result = {"family": family, "real_groups": bin_groups, "n_train": len(train_rows),
              "held_out": {"n_fake": sum(r["label"] for r in held), "n_real": sum(1 - r["label"] for r in held)}}
    models = {recipe: (train_rows, {"probe_features": str(pool)} if pool else {})}
    if baseline and recipe != BASELINE:
        base_rows = [r for r in train_rows if r["family"] != "aligned"] if not RECIPES[BASELINE][2]["aligned"] else train_rows
        models[BASELINE] = (base_rows, {})
    detectors = {}
    for name, (data_rows, extra) in models.items():
        started = time.time()
        model = train_recipe(name, data_rows, work / f"{name}-{family}", **extra)
        detectors[name] = load_recipe_model(name, model)
        result[name] = {"train_s": round(time.time() - started, 1), "threshold": detectors[name].threshold}
    old = old_default()
    if old is not None:
        detectors[OLD_DEFAULT] = old
        result[OLD_DEFAULT] = {"threshold": old.threshold}
    for name, grid in score_grid(detectors, held, work / f"held-out-{family}").items():
        result[name]["grid"] = grid
    return result


def _finished(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return config.exists() and "training" in json.loads(config.read_text())


def load_results() -> dict:
    return read_results(OUT_JSON)


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    what = RECIPES[args.recipe][0]
    rows = all_rows(args.recipe, Path(args.aligned))
    pool = pool_run(args.recipe, rows)
    bins = real_bins(rows, len(FOLD_FAMILIES))
    folds = FOLD_FAMILIES if args.folds == "all" else tuple(args.folds.split(","))
    results = load_results()
    run = results.setdefault(args.recipe, {"what": what, "folds": {}})
    run.update({"machine": machine(), "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")})
    for family in folds:
        k = FOLD_FAMILIES.index(family)
        print(f"[{args.recipe}] fold {family}: held-out reals {bins[k]}", file=sys.stderr, flush=True)
        run["folds"][family] = run_fold(args.recipe, family, bins[k], rows, WORK / args.recipe, not args.no_baseline,
                                        pool)
        write_results(OUT_JSON, results)
        g = run["folds"][family][args.recipe]["grid"]["none"]
        print(f"[{args.recipe}] fold {family}: AUC {g['auc']}, TPR@5% {g['tpr_at_5fpr']}, real FPR {g['real_fpr']}",
              file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- report


def summarise(run: dict, model: str) -> dict:
    """Mean over folds, per perturbation, of each metric (folds where it is defined)."""
    per = defaultdict(lambda: defaultdict(list))
    for fold in run["folds"].values():
        for pert, m in fold.get(model, {}).get("grid", {}).items():
            for key, v in m.items():
                if v is not None and key not in ("n_real", "n_fake"):
                    per[pert][key].append(v)
    return {pert: {k: float(np.mean(v)) for k, v in d.items()} for pert, d in per.items()}


def render(results: dict, recipe: str) -> str:
    run = results[recipe]
    models = [recipe] + [m for m in (OLD_DEFAULT, BASELINE) if m != recipe and any(m in f for f in run["folds"].values())]
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["## Generalization (leave one generator family out)", "",
             f"Made by `python -m benchmarks.generalization run --recipe {recipe}` on {run.get('machine', '?')} "
             f"({run.get('date', '?')}); raw results in `benchmarks/results/generalization.json`. Recipe: {run['what']}.",
             "Each fold trains without one generator family and one group of real photos (camera makes or "
             "photo sets), and is scored on exactly those; see the module docstring of `benchmarks/generalization.py`.",
             f"Folds measured: {len(run['folds'])} of {len(FOLD_FAMILIES)}"
             + (f" (not yet: {', '.join(f for f in FOLD_FAMILIES if f not in run['folds'])}; the mean is over the "
                "measured folds only, and a fold with a handful of fakes weighs as much as one with seventy)."
                if len(run["folds"]) < len(FOLD_FAMILIES) else "."),
             "", "### Per fold (no perturbation)", "",
             *table(["held-out family", "fakes", "held-out reals", "reals",
                     *(f"{m}: AUC / TPR@1% / TPR@5% / real FPR" for m in models)], "lrlr" + "l" * len(models))]
    for family, fold in run["folds"].items():
        cells = []
        for m in models:
            g = fold.get(m, {}).get("grid", {}).get("none")
            cells.append("n/a" if g is None else f"{f(g['auc'])} / {f(g['tpr_at_1fpr'])} / {f(g['tpr_at_5fpr'])} / {f(g['real_fpr'])}")
        lines.append(row([family, fold["held_out"]["n_fake"], ", ".join(fold["real_groups"]), fold["held_out"]["n_real"],
                          *cells]))
    means = {m: summarise(run, m) for m in models}
    lines.append(row(["**mean**", "", "", "", *(
        f"**{f(means[m]['none'].get('auc'))} / {f(means[m]['none'].get('tpr_at_1fpr'))} / "
        f"{f(means[m]['none'].get('tpr_at_5fpr'))} / {f(means[m]['none'].get('real_fpr'))}**" for m in models)]))
    lines += ["", "### Perturbation grid (mean over folds: AUC / TPR at 5% FPR)", "",
              *table(["model", *PERTURBATIONS], "l" + "r" * len(PERTURBATIONS))]
    for m in models:
        lines.append(row([m, *(f"{f(means[m].get(p, {}).get('auc'))} / {f(means[m].get(p, {}).get('tpr_at_5fpr'))}"
                               for p in PERTURBATIONS)]))
    lines.append("")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> None:
    publish(render(load_results(), args.recipe))


def main(argv: list[str] | None = None) -> None:
    parser, sub = subcommands(__doc__)
    p = sub.add_parser("run", help="train and score folds")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES))
    p.add_argument("--folds", default="all", help=f"comma-separated families, or all ({', '.join(FOLD_FAMILIES)})")
    p.add_argument("--aligned", default=str(ALIGNED),
                   help="the aligned-fakes dataset of the dev reals (made with aigi synth aligned if absent; "
                        "default %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the from-scratch CNN baseline")
    p.set_defaults(func=cmd_run)
    add_report(sub, cmd_report).add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES))
    run_subcommand(parser, argv)


if __name__ == "__main__":
    main()
