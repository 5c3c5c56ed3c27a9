"""Open-set attribution: does a model know when a fake comes from a generator it never saw?

    python -m benchmarks.openset run                    # the fold models of benchmarks.generalization
    python -m benchmarks.openset run --small --folds ldm,clip-guided,openai   # small models trained here
    python -m benchmarks.openset report [--recipe R]    # results -> BENCHMARKS.md, "Open-set attribution"

**Folds** are those of :mod:`benchmarks.generalization` (leave one generator family out). A fold
model, ``$AIGI_BENCH_CACHE/generalization/<recipe>/<recipe>-<family>/model``, never saw
``<family>``: its fakes are **unknown**. The **known** fakes are the test-split fakes (public
split rule) of the families it was trained on, from the same packs (generators-dev,
sd15-styles); aligned fakes and CIFAKE are left out. No image here trained the model.

**Score**: ``p_generator``, the top generator's probability given AI-generated (the open-set
rule of :mod:`aigi.training.calibration`); higher means "a generator I know". AUROC of known vs
unknown, and of the negative entropy of the generator distribution beside it. At the rule's
threshold (the model's stored ``open_set``, or, for a model trained before aigi stored one,
the same rule applied to its fold's val-split fakes, said so): the share of unknown fakes named
``unknown`` and of known fakes that keep their name. Every fake is scored, whatever its p_fake:
this measures attribution, not detection.

``--small`` trains, per fold, a from-scratch ``cnn-small`` (32 px whole images, 3 epochs) on
that fold's training rows, so the benchmark runs end to end where the real fold models are
not there yet; its figures say little about the real recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .harness import (RESULTS, add_report, machine, publish, read_results, row, run_subcommand, subcommands, table,
                      write_manifest, write_results)
from .generalization import FOLD_FAMILIES, WORK, dev_rows, fold_rows, real_bins

OUT_JSON = RESULTS / "openset.json"
SECTION = "## Open-set attribution"
SMALL = "cnn-small-openset"
SMALL_RECIPE = dict(backbone="cnn-small", tune="full", native=False, image_size=32, epochs=3, lr=1e-3, batch_size=64,
                    augment="light", workers=1, max_val_images=300, epoch_images=1500)
PACKS = ("generators-dev.zip", "sd15-styles.zip")


def _member(path: str) -> str:
    return path.split("::", 1)[1]


def split_rows(rows: list[dict], family: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(unknown, known, val_known): the held-out family's fakes; the test-split and val-split
    fakes of the trained families (generator packs only)."""
    from aigi.io.samples import split_of

    fakes = [r for r in rows if r["label"] == 1 and Path(r["path"].split("::")[0]).name in PACKS]
    unknown = [r for r in fakes if r["family"] == family]
    known = [r for r in fakes if r["family"] != family and split_of(_member(r["path"])) == "test"]
    val = [r for r in fakes if r["family"] != family and split_of(_member(r["path"])) == "val"]
    return unknown, known, val


def p_generator(detector, rows: list[dict], work: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(p_generator, negative entropy of the generator distribution) of every row's image."""
    from aigi.inference.detect import score_samples
    from aigi.io.datasets import load_dataset
    from aigi.training.calibration import generator_confidence

    samples = load_dataset(write_manifest(rows, work / f"{name}.csv")).samples
    probs = []
    for _, pred in score_samples(detector, samples, batch_size=64, workers=1, evidence=False):
        if pred.generator_probs:
            probs.append([pred.generator_probs.get(k, 0.0) for k in detector.labels])
    probs = np.asarray(probs, np.float64).reshape(-1, len(detector.labels))
    gens = probs[:, 1:] / np.maximum(probs[:, 1:].sum(axis=1, keepdims=True), 1e-12)
    neg_entropy = (gens * np.log(np.clip(gens, 1e-12, 1))).sum(axis=1)
    return generator_confidence(probs), neg_entropy


def _auroc(known: np.ndarray, unknown: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not len(known) or not len(unknown):
        return None
    return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))], np.r_[known, unknown]))


def score_fold(model_dir: Path, family: str, rows: list[dict], work: Path) -> dict:
    from aigi.detector.model import Detector
    from aigi.training.calibration import open_set_threshold

    detector = Detector.from_pretrained(model_dir)
    unknown, known, val = split_rows(rows, family)
    trained = set(detector.labels[1:])
    leaked = sorted({r["generator"] for r in unknown} & trained)
    if leaked:
        raise SystemExit(f"{model_dir} was trained on {', '.join(leaked)} of the held-out family {family}: not a fold model")
    pu, eu = p_generator(detector, unknown, work, "unknown")
    pk, ek = p_generator(detector, known, work, "known")
    rule = detector.config.get("open_set")
    source = "stored in the model"
    if rule is None:  # trained before aigi stored the rule: the same rule on this fold's val-split fakes
        rule = open_set_threshold(p_generator(detector, val, work, "val")[0])
        source = "derived here from the fold's val-split fakes (the model stores none)"
    t = rule["threshold"] if rule else None
    return {
        "family": family, "model": str(model_dir), "n_unknown": len(pu), "n_known": len(pk),
        "unknown_generators": sorted({r["generator"] for r in unknown}),
        "auroc_p_generator": _auroc(pk, pu), "auroc_neg_entropy": _auroc(ek, eu),
        "threshold": t, "threshold_source": source,
        "unknown_flagged": float((pu < t).mean()) if t is not None and len(pu) else None,
        "known_kept": float((pk >= t).mean()) if t is not None and len(pk) else None,
        "mean_p_generator_unknown": float(pu.mean()) if len(pu) else None,
        "mean_p_generator_known": float(pk.mean()) if len(pk) else None,
    }


def train_small(family: str, rows: list[dict], bins: list[list[str]], work: Path) -> Path:
    """A small fold model (see the module docstring), trained once and reused."""
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    train_rows, _ = fold_rows(rows, family, bins[FOLD_FAMILIES.index(family)])
    out = work / f"{SMALL}-{family}"
    model = out / "model"
    config = model / "config.json"
    if not (config.exists() and "training" in json.loads(config.read_text())):
        manifest = write_manifest(train_rows, out / "train.csv")
        train(TrainConfig(data=str(manifest), out=str(model), progress=False, resume=True, **SMALL_RECIPE))
    return model


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    rows = dev_rows(None)
    recipe = SMALL if args.small else args.recipe
    folds = FOLD_FAMILIES if args.folds == "all" else tuple(args.folds.split(","))
    work = Path(args.cache) / recipe if args.cache else WORK / recipe
    results = read_results(OUT_JSON)
    run = results.setdefault(recipe, {"folds": {}})
    run.update({"machine": machine(), "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
                "small": bool(args.small), "command": "python -m benchmarks.openset " + " ".join(sys.argv[1:])})
    bins = real_bins(rows, len(FOLD_FAMILIES))
    missing = []
    for family in folds:
        model = train_small(family, rows, bins, work) if args.small else work / f"{recipe}-{family}" / "model"
        config = model / "config.json"
        if not (config.exists() and "training" in json.loads(config.read_text())):  # absent, or still training
            missing.append(family)
            continue
        started = time.time()
        fold = score_fold(model, family, rows, work / f"{recipe}-{family}")
        fold["score_s"] = round(time.time() - started, 1)
        run["folds"][family] = fold
        write_results(OUT_JSON, results)
        print(f"[{recipe}] {family}: AUROC {fold['auroc_p_generator']}, unknown flagged {fold['unknown_flagged']}, "
              f"known kept {fold['known_kept']}", file=sys.stderr, flush=True)
    if missing:
        print(f"no fold model for {', '.join(missing)} under {work}: train them with "
              f"`python -m benchmarks.generalization run --recipe {recipe} --folds {','.join(missing)}`, "
              "or pass --small", file=sys.stderr)


def render(run: dict, recipe: str) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    folds = run["folds"]
    made = run.get("command") or f"python -m benchmarks.openset run{' --small' if run.get('small') else ' --recipe ' + recipe}"
    lines = [f"### {recipe}", "",
             f"Made by `{made}` on {run.get('machine', '?')} ({run.get('date', '?')}); raw results in "
             "`benchmarks/results/openset.json`. Per leave-one-family-out fold: the held-out family's fakes are "
             "unknown, the test-split fakes of the trained families known (see `benchmarks/openset.py`). Score: "
             "p_generator (higher: a known generator); the threshold is the open-set rule's (95% of held-out known "
             "fakes keep their name).", ""]
    if run.get("small"):
        lines += ["**These rows come from small from-scratch models (cnn-small, 32 px, 3 epochs) trained by the "
                  "benchmark itself, to check it end to end; they say little about the real recipe.** The real "
                  "figures: `python -m benchmarks.openset run --recipe native-lite0` once "
                  "`python -m benchmarks.generalization run --recipe native-lite0` has trained its fold models.", ""]
    lines += table(["held-out family", "unknown fakes", "known fakes", "AUROC p_generator", "AUROC −entropy", "threshold",
                    "unknowns called unknown", "knowns keep their name"], "l" + "r" * 7)
    for family, r in folds.items():
        lines.append(row([family, r["n_unknown"], r["n_known"], f(r["auroc_p_generator"]), f(r["auroc_neg_entropy"]),
                          f(r["threshold"]), f(r["unknown_flagged"]), f(r["known_kept"])]))
    mean = lambda k: float(np.mean([r[k] for r in folds.values() if r[k] is not None])) if any(  # noqa: E731
        r[k] is not None for r in folds.values()) else None
    lines.append(row(["**mean**", "", "", f"**{f(mean('auroc_p_generator'))}**", f"**{f(mean('auroc_neg_entropy'))}**", "",
                      f"**{f(mean('unknown_flagged'))}**", f"**{f(mean('known_kept'))}**"]))
    sources = {r["threshold_source"] for r in folds.values()}
    lines += ["", f"Thresholds: {'; '.join(sorted(sources))}.", ""]
    return "\n".join(lines)


def render_all(results: dict) -> str:
    """The BENCHMARKS.md section: every recipe measured, the real fold models before --small ones."""
    recipes = sorted((r for r in results if results[r]["folds"]), key=lambda r: (results[r].get("small", False), r))
    intro = [SECTION, "",
             "Does the model know when a fake comes from a generator it never saw? The open-set rule "
             "(`aigi.training.calibration`) names the generator `unknown` when p_generator is under the threshold that 95% of "
             "held-out fakes of the trained generators reach.", ""]
    return "\n".join(intro) + "\n" + "\n".join(render(results[r], r) for r in recipes)


def cmd_report(args: argparse.Namespace) -> None:
    results = read_results(OUT_JSON)
    if not any(run["folds"] for run in results.values()):
        raise SystemExit(f"no open-set results in {OUT_JSON}: run `python -m benchmarks.openset run` first")
    publish(render_all(results))


def main(argv: list[str] | None = None) -> None:
    parser, sub = subcommands(__doc__)
    p = sub.add_parser("run", help="score the fold models (or train small ones with --small)")
    p.add_argument("--recipe", default="native-lite0", help="the generalization recipe whose fold models to score")
    p.add_argument("--small", action="store_true", help="small models trained here instead (see the docstring)")
    p.add_argument("--folds", default="all", help=f"comma-separated families, or all ({', '.join(FOLD_FAMILIES)})")
    p.add_argument("--cache", default=None, help="where the fold models are (default: $AIGI_BENCH_CACHE/generalization)")
    p.set_defaults(func=cmd_run)
    add_report(sub, cmd_report, "write the BENCHMARKS.md section (every recipe measured)")
    run_subcommand(parser, argv)


if __name__ == "__main__":
    main()
