"""Few-shot adaptation: a model that never saw a generator family, taught it from K examples.

    python -m benchmarks.fewshot run                          # every fold whose model exists, K = 5, 20, 100
    python -m benchmarks.fewshot run --folds midjourney,flux --k 5,20
    python -m benchmarks.fewshot run --fallback               # train the fallback where a fold model is absent
    python -m benchmarks.fewshot time --k 100                 # wall time of aigi adapt with 100 new images
    python -m benchmarks.fewshot report                       # results -> BENCHMARKS.md

**Models.** For family F, the fold model of ``benchmarks/generalization.py`` for the default
recipe (``$AIGI_BENCH_CACHE/generalization/native-lite0/native-lite0-F/model``): trained,
epoch-selected and calibrated without any image of F and without one bin of real photos.
Where that model does not exist, ``--fallback`` trains one here, recipe ``lite0-linear``
(``FALLBACK``): ImageNet EfficientNet-Lite0 frozen, linear heads on 224 px native crops,
trained on the same fold's rows of the high-resolution sets (no aligned fakes, no CIFAKE),
about two minutes a fold on 2 CPU cores; results say which model each fold used.

**Record.** The fold models have no record of their training data, so one is made per fold
(``aigi.training.memory.save_memory_for``, 4 MB) from the fold's own training manifest: its train split
for the fit part, its val split held out, as ``aigi memory MODEL train.csv`` would.

**Protocol.** F's images are shuffled (seed); the second half is F's test set, the same for
every K; the adaptation set for K is the first K' = min(K, n_F // 2) of the first half (the
table says K' and n_F). ``aigi.training.adapt.adapt(model, {F: those K' images})`` writes the adapted
model (its wall time includes embedding the K' images). Scores before and after come from
pooled features (:mod:`aigi.inference.embed`, computed once per fold with the unchanged encoder; the
heads are linear, so they are the scores ``aigi detect`` gives):

- F's test images against the fold's held-out real photos: recall at each model's stored
  threshold, the reals' false-positive rate, and AUC;
- the other families: the test split of the fold's training manifest (fakes of every family
  the model trained on, aligned fakes and CIFAKE included, and the reals of the training
  groups; none ever trained on) with the held-out reals: AUC before and after, overall and
  per family (families with at least 5 test fakes). The target: a drop of at most 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .harness import (RESULTS, add_report, machine, publish, read_results, row, run_subcommand, subcommands, table,
                      write_manifest, write_results)

OUT_JSON = RESULTS / "fewshot.json"
CACHE = Path(os.environ.get("AIGI_BENCH_CACHE", Path.home() / ".cache" / "aigi" / "bench"))
WORK = CACHE / "fewshot"
KS = (5, 20, 100)
RECIPE = "native-lite0"
FALLBACK = "lite0-linear"
FALLBACK_CONFIG = dict(backbone="efficientnet-lite0", tune="linear", augment="none", image_size=224, crops=4, epochs=30,
                       batch_size=64, head_lr=1e-3, workers=0, max_val_images=600)
TARGET_DROP = 0.01
MIN_FAMILY_FAKES = 5


# ----------------------------------------------------------------------------- rows and features


def family_of(generator: str) -> str:
    from .generalization import FAMILIES

    if generator.startswith("aligned-"):
        return "aligned"
    if generator == "sd14":
        return "cifake"
    return FAMILIES.get(generator, generator)


def read_manifest(path: Path, split: str) -> list[dict]:
    """Rows of one public split of a manifest: path (as results name it), label, generator, family."""
    from aigi.io.datasets import load_dataset

    return [dict(path=s.display, label=s.label, generator=s.generator, family=family_of(s.generator) if s.label else "real")
            for s in load_dataset(path, split).samples]


def pooled_features(detector, rows: list[dict], out: Path) -> np.ndarray:
    """Pooled features of ``rows`` in their order (aigi embed into ``out``: resumable, cached);
    rows that could not be embedded get NaN."""
    from aigi.inference.embed import embed, load_features

    embed(detector, [write_manifest(rows, out.with_suffix(".csv"))], out, progress=False)
    f = load_features(out)
    where = {p: i for i, p in enumerate(f.paths)}
    feats = np.full((len(rows), f.features.shape[1]), np.nan, np.float32)
    for i, r in enumerate(rows):
        if r["path"] in where:
            feats[i] = f.features[where[r["path"]]]
    return feats


def head_scores(detector, features: np.ndarray) -> np.ndarray:
    """p_fake from pooled features, as :meth:`aigi.detector.scoring.ScoringMixin.score_inputs` combines crops."""
    import torch

    with torch.inference_mode():
        logits = detector.heads(torch.from_numpy(np.nan_to_num(features)).to(detector.device)).binary_logits
    p = 1.0 / (1.0 + np.exp(-logits.double().cpu().numpy() / detector.temperature))
    p[np.isnan(features).any(axis=1)] = np.nan
    return p


def _auc(real: np.ndarray, fake: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    real, fake = real[~np.isnan(real)], fake[~np.isnan(fake)]
    if not len(real) or not len(fake):
        return None
    return float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake]))


def _rate(p: np.ndarray, threshold: float) -> float | None:
    p = p[~np.isnan(p)]
    return float((p >= threshold).mean()) if len(p) else None


def scores_of(detector, feats: dict[str, np.ndarray], other_families: np.ndarray) -> dict:
    """Every figure of the protocol for one model (its own threshold)."""
    p = {k: head_scores(detector, v) for k, v in feats.items()}
    reals_all = np.r_[p["real"], p["other_real"]]
    per_family = {}
    for fam in sorted(set(other_families)):
        sel = other_families == fam
        if sel.sum() >= MIN_FAMILY_FAKES:
            per_family[fam] = _auc(reals_all, p["other_fake"][sel])
    return {"threshold": detector.threshold, "recall": _rate(p["family"], detector.threshold),
            "real_fpr": _rate(p["real"], detector.threshold), "auc": _auc(p["real"], p["family"]),
            "other_auc": _auc(reals_all, p["other_fake"]), "other_auc_per_family": per_family}


# ----------------------------------------------------------------------------- one fold


def measure_fold(model_dir: Path, family: str, family_rows: list[dict], real_rows: list[dict], other_rows: list[dict],
                 train_manifest: Path, work: Path, ks=KS, seed: int = 0) -> dict:
    """Adapt the fold model to ``family`` for each K and score before/after (module docstring)."""
    from aigi.detector.model import Detector
    from aigi.training.adapt import adapt
    from aigi.training.memory import save_memory_for

    work.mkdir(parents=True, exist_ok=True)
    detector = Detector.from_pretrained(model_dir)
    memory, costs = work / "memory.safetensors", work / "costs.json"  # one-off costs, kept for the report
    cost = json.loads(costs.read_text()) if costs.exists() else {}
    started = time.time()
    if not memory.exists():
        save_memory_for(detector, train_manifest, memory, progress=False)
        cost["memory_s"] = round(time.time() - started, 1)

    rng = np.random.default_rng([seed, 17])
    order = rng.permutation(len(family_rows))
    half = len(family_rows) // 2
    pool, test = [family_rows[i] for i in order[:half]], [family_rows[i] for i in order[half:]]
    other_fake = [r for r in other_rows if r["label"] == 1]
    other_real = [r for r in other_rows if r["label"] == 0]
    started = time.time()
    feats = {"family": pooled_features(detector, test, work / "features-family-test"),
             "real": pooled_features(detector, real_rows, work / "features-held-out-reals"),
             "other_fake": pooled_features(detector, other_fake, work / "features-other-fakes"),
             "other_real": pooled_features(detector, other_real, work / "features-other-reals")}
    if "test_features_s" not in cost:
        cost["test_features_s"] = round(time.time() - started, 1)
    costs.write_text(json.dumps(cost) + "\n")
    other_families = np.array([r["family"] for r in other_fake])
    before = scores_of(detector, feats, other_families)
    result = {"model": str(model_dir), "n_family": len(family_rows), "n_test_family": len(test),
              "n_held_out_reals": len(real_rows), "n_other_fakes": len(other_fake), "n_other_reals": len(other_real),
              "memory_s": cost.get("memory_s"), "test_features_s": cost.get("test_features_s"), "seed": seed, "before": before, "k": {},
              "other_family_n": {f: int((other_families == f).sum()) for f in before["other_auc_per_family"]}}
    done = set()
    for k in ks:
        k_eff = min(k, half)
        if k_eff < 1 or k_eff in done:
            continue
        done.add(k_eff)
        chosen = pool[:k_eff]
        manifest = write_manifest(chosen, work / f"adapt-k{k_eff}.csv", generator=family)
        t0 = time.time()
        record = adapt(model_dir, {family: [manifest]}, work / f"adapted-k{k_eff}", memory=memory, seed=seed,
                       progress=False)
        wall = round(time.time() - t0, 2)
        after = scores_of(record["detector"], feats, other_families)
        drops = {f: before["other_auc_per_family"][f] - a for f, a in after["other_auc_per_family"].items()
                 if a is not None and before["other_auc_per_family"].get(f) is not None}
        worst = max(drops, key=drops.get) if drops else None
        result["k"][str(k)] = {
            "k_used": k_eff, "after": after, "adapt_wall_s": wall, "timing": record["timing"],
            "n_fit_new": record["added"][0]["n_fit"], "n_held_out_new": record["added"][0]["n_held_out"],
            "other_auc_change": (after["other_auc"] - before["other_auc"]) if None not in (after["other_auc"], before["other_auc"]) else None,
            "worst_family_drop": {"family": worst, "drop": drops[worst]} if worst else None}
        print(f"[fewshot] {family} K={k_eff}: recall {before['recall']:.3f} -> {after['recall']:.3f}, real FPR "
              f"{before['real_fpr']:.3f} -> {after['real_fpr']:.3f}, other-families AUC {before['other_auc']:.4f} -> "
              f"{after['other_auc']:.4f}; adapt {wall:.1f} s", file=sys.stderr, flush=True)
    return result


# ----------------------------------------------------------------------------- folds


def fold_dir(recipe: str, family: str) -> Path:
    return CACHE / "generalization" / recipe / f"{recipe}-{family}"


def finished(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return config.exists() and "training" in json.loads(config.read_text())


def fold_split(family: str) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(all rows, F's rows, the fold's held-out reals, their groups), as benchmarks.generalization deals them."""
    from .generalization import FOLD_FAMILIES, dev_rows, fold_rows, real_bins

    rows = dev_rows(None)
    groups = real_bins(rows, len(FOLD_FAMILIES))[FOLD_FAMILIES.index(family)]
    train, held = fold_rows(rows, family, groups)
    return train, [r for r in held if r["label"] == 1], [r for r in held if r["label"] == 0], groups


def fallback_model(family: str, train_rows: list[dict]) -> Path:
    """The ``lite0-linear`` fold model (module docstring), trained once and cached."""
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    out = WORK / FALLBACK / family
    manifest = write_manifest(train_rows, out / "train.csv")
    if not finished(out / "model"):
        train(TrainConfig(data=str(manifest), out=str(out / "model"), progress=False, resume=True, **FALLBACK_CONFIG))
    return out / "model"


def load_results() -> dict:
    return read_results(OUT_JSON)


def save_results(results: dict) -> None:
    write_results(OUT_JSON, results)


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    from .generalization import FOLD_FAMILIES

    ks = tuple(int(k) for k in args.k.split(","))
    folds = FOLD_FAMILIES if args.folds == "all" else tuple(args.folds.split(","))
    results = load_results()
    run = results.setdefault("runs", {})
    for family in folds:
        train_rows, fam_rows, real_rows, groups = fold_split(family)
        model_dir, recipe = fold_dir(args.recipe, family) / "model", args.recipe
        if not finished(model_dir):
            if not args.fallback:
                print(f"[fewshot] {family}: no fold model at {model_dir} (run benchmarks.generalization, or pass "
                      "--fallback); skipped", file=sys.stderr)
                continue
            model_dir, recipe = fallback_model(family, train_rows), FALLBACK
        manifest = model_dir.parent / "train.csv"
        other = read_manifest(manifest, "test")
        load = os.getloadavg()[0]
        started = time.time()
        fold = measure_fold(model_dir, family, fam_rows, real_rows, other, manifest, WORK / recipe / family, ks, args.seed)
        fold.update({"recipe": recipe, "held_out_real_groups": groups, "wall_s": round(time.time() - started, 1),
                     "load_average": [round(load, 2), round(os.getloadavg()[0], 2)], "date": time.strftime("%Y-%m-%d"),
                     "machine": machine(), "torch_threads": torch.get_num_threads()})
        run[f"{recipe}:{family}"] = fold
        save_results(results)


def cmd_time(args: argparse.Namespace) -> None:
    """aigi adapt's wall time with K new images (of a family the model did see: only the count
    and the image sizes matter here, and no family has 2 x 100 images but sd1)."""
    from aigi.training.adapt import adapt

    from .generalization import FOLD_FAMILIES, dev_rows

    family = next((f for f in FOLD_FAMILIES if finished(fold_dir(args.recipe, f) / "model")), None)
    if family is None:
        raise SystemExit(f"no fold model of {args.recipe} yet: run benchmarks.generalization first")
    model_dir = fold_dir(args.recipe, family) / "model"
    work = WORK / args.recipe / family
    memory = work / "memory.safetensors"
    if not memory.exists():
        raise SystemExit(f"{memory} is absent: run `python -m benchmarks.fewshot run --folds {family}` first")
    rows = [r for r in dev_rows(None) if r["family"] == args.images_from]
    chosen = [rows[i] for i in sorted(np.random.default_rng(0).choice(len(rows), size=args.k, replace=False))]
    manifest = write_manifest(chosen, work / f"time-k{args.k}.csv", generator=f"{args.images_from}-again")
    load = os.getloadavg()[0]
    t0 = time.time()
    record = adapt(model_dir, {f"{args.images_from}-again": [manifest]}, work / f"time-k{args.k}", memory=memory,
                   progress=False)
    wall = round(time.time() - t0, 2)
    results = load_results()
    results.setdefault("timing", {})[f"{args.recipe}:k{args.k}"] = {
        "model": str(model_dir), "k": args.k, "images_from": args.images_from, "wall_s": wall,
        "timing": record["timing"], "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
        "date": time.strftime("%Y-%m-%d"), "machine": machine()}
    save_results(results)
    print(f"[fewshot] aigi adapt with K={args.k} ({args.images_from} images) on {model_dir}: {wall:.1f} s wall "
          f"({record['timing']})", file=sys.stderr)


# ----------------------------------------------------------------------------- report


def render(results: dict) -> str:
    f = lambda v, d=3: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    runs = results.get("runs", {})
    lines = ["## Few-shot adaptation", "",
             "A model trained without a generator family, taught it with `aigi adapt` from K of its images "
             "(heads refitted on frozen features plus the model's 4 MB record of its training data; encoder unchanged). "
             "Made by `python -m benchmarks.fewshot run` and `python -m benchmarks.fewshot report`; protocol in the "
             "docstring of `benchmarks/fewshot.py`, raw results in `benchmarks/results/fewshot.json`.",
             "", "Recall and real FPR at each model's stored threshold (the adapted model's is recalibrated by the "
             "model's own rule); *family AUC*: the family's test images against the fold's held-out real photos; "
             f"*other families*: AUC of the other families' test-split fakes (never trained on) against the "
             f"test-split reals of the training groups plus the fold's held-out reals; target: a drop of at most "
             f"{TARGET_DROP}. *Worst family drop*: the largest AUC drop of one other family (those with at least "
             f"{MIN_FAMILY_FAKES} test fakes; with few fakes it is noisy). *Adapt wall*: the whole `aigi adapt` call, "
             "embedding the K new images included, with the record already made.", "",
             *table(["model", "family", "n", "K", "test fakes / reals", "recall", "real FPR", "family AUC",
                     "other families AUC (change)", "worst family drop", "adapt wall"], "llrrrlllllr")]
    met = total = 0
    for key, fold in runs.items():
        recipe, family = key.split(":", 1)
        b = fold["before"]
        for k, r in fold["k"].items():
            a = r["after"]
            change = r["other_auc_change"]
            total += change is not None
            met += change is not None and -change <= TARGET_DROP
            worst = r["worst_family_drop"]
            lines.append(row([
                recipe, family, fold["n_family"], r["k_used"], f"{fold['n_test_family']} / {fold['n_held_out_reals']}",
                f"{f(b['recall'])} → {f(a['recall'])}", f"{f(b['real_fpr'])} → {f(a['real_fpr'])}",
                f"{f(b['auc'])} → {f(a['auc'])}",
                f"{f(b['other_auc'], 4)} → {f(a['other_auc'], 4)} ({'+' if (change or 0) >= 0 else ''}{f(change, 4)})",
                f"{worst['family']} ({fold.get('other_family_n', {}).get(worst['family'], '?')} fakes) "
                f"{f(worst['drop'], 4)}" if worst else "n/a", f"{r['adapt_wall_s']:.1f} s"]))
    if total:
        lines += ["", f"Other-families AUC within the target (drop ≤ {TARGET_DROP}): {met} of {total} runs."]
    for key, t in results.get("timing", {}).items():
        lines += ["", f"**Wall time of `aigi adapt` with K={t['k']}** ({t['images_from']} images, model "
                      f"`{Path(t['model']).parent.name}`): {t['wall_s']:.1f} s "
                      f"({', '.join(f'{k[:-2]} {v:.1f} s' for k, v in t['timing'].items())}); "
                      f"load average {t['load_average'][0]} before, {t['load_average'][1]} after "
                      f"(2 cores; above 1, other processes shared them). `python -m benchmarks.fewshot time --k {t['k']}`."]
    notes = sorted({f"{key.split(':')[1]}: {fold['machine']}, {fold['date']}, load average {fold['load_average'][0]}–"
                    f"{fold['load_average'][1]}; once per fold: record made in {fold['memory_s']} s, test features in "
                    f"{fold['test_features_s']} s" for key, fold in runs.items()})
    if notes:
        lines += ["", "Runs (a load average above 1 on the 2 cores means other processes shared them):", ""]
        lines += [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> None:
    publish(render(load_results()))


def main(argv: list[str] | None = None) -> None:
    parser, sub = subcommands(__doc__)
    p = sub.add_parser("run", help="adapt fold models and score them")
    p.add_argument("--recipe", default=RECIPE, help="the generalization recipe whose fold models to use (default %(default)s)")
    p.add_argument("--folds", default="all", help="comma-separated families, or all")
    p.add_argument("--k", default=",".join(map(str, KS)), help="K values (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallback", action="store_true", help=f"train the {FALLBACK} fold model where the recipe's is absent")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("time", help="wall time of aigi adapt with K new images")
    p.add_argument("--recipe", default=RECIPE)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--images-from", default="sd1", help="family whose images are added (default %(default)s)")
    p.set_defaults(func=cmd_time)
    add_report(sub, cmd_report)
    run_subcommand(parser, argv)


if __name__ == "__main__":
    main()
