"""Accuracy benchmark: train and evaluate named configurations side by side.

    python -m benchmarks.accuracy run cnn-scratch            # one row (trains, evaluates, writes JSON)
    python -m benchmarks.accuracy run --all                  # every CPU row, one after another
    python -m benchmarks.accuracy run vit-s-full-paper-224-gpu   # the paper's recipe at full scale (CUDA GPU)
    python -m benchmarks.accuracy report                     # results/*.json -> BENCHMARKS.md

Each row trains on the train split of ../shared/data/cifake-dev.zip (public split rule),
keeps the best epoch on val, and is scored on
- the cifake-dev test split (detection),
- the generalization set: sd15-styles fakes (generators never seen) vs real-photos-dev
  reals, both cropped to 320 px and re-encoded as JPEG q95 4:4:4 (benchmarks/datasets.py),
Attribution rows (suffix ``-attribution``) train on the 4-source set (real, sd14,
deliberate-2-0, dreamshaper-3-2, all at 32 px JPEG q95) and report per-source recall.

Every run happens in a child process so that its peak RSS is its own. CPU cost is real:
the settings below (input size, train images, epochs) are chosen so that each row finishes
in well under 90 minutes on a 2-core CPU; they are printed in the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from .harness import BENCHMARKS_MD, RESULTS, ROOT, SHARED, machine, replace_between, row, subcommands, table, update_markdown

CIFAKE = str(SHARED / "data" / "cifake-dev.zip")
DINOV2 = str(SHARED / "zoo" / "dinov2-s14-imgfocus")
VIT = dict(backbone=DINOV2, image_size=112, max_images=4000, max_val_images=1000, batch_size=32, workers=1)

# name -> (what it stands for, TrainConfig overrides). data defaults to cifake-dev.
CONFIGS: dict[str, tuple[str, dict]] = {
    "cnn-scratch": ("small CNN from scratch (CIFAKE baseline)",
                    dict(backbone="cnn-small", tune="full", epochs=10, lr=1e-3, batch_size=64, augment="light",
                         max_val_images=2000, workers=1)),
    "effnet-lite0-cnndetection": ("ImageNet EfficientNet-Lite0 fine-tuned, blur+JPEG aug (CNNDetection-style)",
                                  dict(backbone="efficientnet-lite0", tune="full", epochs=2, lr=2e-4, image_size=64,
                                       augment="light", max_images=20000, max_val_images=2000, batch_size=64,
                                       workers=1, precision="fp32")),
    "effnet-lite0-full": ("ImageNet EfficientNet-Lite0 fine-tuned on all of CIFAKE train (the default model's recipe)",
                          dict(backbone="efficientnet-lite0", tune="full", epochs=8, lr=2e-4, image_size=64,
                               augment="light", max_val_images=3000, batch_size=64, workers=1)),
    "effnet-lite0-128px": ("ImageNet EfficientNet-Lite0 at 128 px (CIFAKE upsampled 4x, the scale its filters learned)",
                           dict(backbone="efficientnet-lite0", tune="full", epochs=4, lr=2e-4, image_size=128,
                                augment="light", max_val_images=2000, batch_size=64, workers=1)),
    "vit-s-linear-univfd": ("frozen pretrained ViT-S/14 + linear heads (UnivFD-style)",
                            dict(VIT, tune="linear", augment="none", epochs=12, max_images=10000, max_val_images=1000)),
    "vit-s-full-paper": ("pretrained ViT-S/14, full fine-tune, Adam, 12 epochs (the paper's recipe)",
                         dict(VIT, tune="full", epochs=12, augment="light", max_images=1000, max_val_images=300)),
    "vit-s-lora": ("pretrained ViT-S/14, LoRA r=8 on q/v", dict(VIT, tune="lora", epochs=12, augment="light",
                                                               max_images=1000, max_val_images=300)),
    "vit-s-last-k": ("pretrained ViT-S/14, last 2 blocks", dict(VIT, tune="last-k", last_k=2, epochs=12, augment="light",
                                                               max_images=1000, max_val_images=300)),
    # GPU only (about 30 hours on the 2-core CPU): the paper's recipe at full data and 224 px.
    "vit-s-full-paper-224-gpu": ("pretrained ViT-S/14, full fine-tune, Adam, 12 epochs, all of CIFAKE train at 224 px "
                                 "(the paper's recipe, on a GPU)",
                                 dict(VIT, tune="full", epochs=12, augment="light", image_size=224, max_images=None,
                                      max_val_images=3000, batch_size=64, workers=8, needs_gpu=True)),
    "tiny-clip-scratch": ("tiny-clip (CLIP ViT architecture, no pretraining)",
                          dict(backbone="tiny-clip", tune="full", epochs=12, lr=5e-4, augment="light",
                               max_images=10000, max_val_images=1000, batch_size=64, workers=1)),
    "cnn-scratch-attribution": ("small CNN from scratch, 4 sources", dict(backbone="cnn-small", tune="full", epochs=20,
                                                                           lr=1e-3, batch_size=64, data="attribution")),
    "vit-s-linear-attribution": ("frozen ViT-S/14 + linear heads, 4 sources",
                                 dict(VIT, tune="linear", augment="none", epochs=30, max_images=None, max_val_images=None,
                                      image_size=112, data="attribution")),
}


def run_one(name: str, out_dir: Path, vit: str | None = None) -> dict:
    """Train, evaluate on every benchmark set, and return the row (runs in this process)."""
    import torch

    from aigi.detector.model import Detector
    from aigi.evaluation.evaluate import evaluate
    from aigi.evaluation.report import write_report
    from aigi.io.datasets import load_dataset
    from aigi.training.config import TrainConfig
    from aigi.training.loop import train

    from .datasets import build_attribution, build_generalization

    what, overrides = CONFIGS[name]
    overrides = dict(overrides)
    row_name = name
    if vit and overrides.get("backbone") == DINOV2:  # the same row on another pretrained ViT
        overrides["backbone"] = vit
        row_name = f"{name}@{Path(vit).name}"
    if overrides.pop("needs_gpu", False) and not torch.cuda.is_available():
        raise SystemExit(f"{name} needs a CUDA GPU (it would take about a day on a CPU); run it where one is")
    data = overrides.pop("data", CIFAKE)
    if data == "attribution":
        data = str(build_attribution())
    cfg = TrainConfig(data=data, out=str(out_dir / "model"), progress=False, **overrides)
    started = time.time()
    train(cfg)
    train_s = time.time() - started
    detector = Detector.from_pretrained(cfg.out)
    row = {"name": row_name, "what": what, "backbone": Path(cfg.backbone).name, "tune": cfg.tune,
           "input_px": detector.preprocessing.crop, "epochs": cfg.epochs,
           "train_images": detector.config["training"]["data"]["n_images"],
           "trainable_params": detector.config["training"]["trainable_parameters"],
           "total_params": detector.config["training"]["total_parameters"], "augment": cfg.augment,
           "train_wall_s": round(train_s, 1), "threads": torch.get_num_threads()}
    sets = {"test": load_dataset(data, "test")}
    if not name.endswith("-attribution"):
        sets["generalization"] = load_dataset(build_generalization(), "all")
    for key, dataset in sets.items():
        t0 = time.time()
        metrics, predictions = evaluate(detector, dataset, batch_size=64, workers=2, progress=False)
        wall = time.time() - t0
        write_report(metrics, out_dir / f"eval-{key}", predictions, title=f"{name}: {key}")
        row[key] = {k: metrics.get(k) for k in ("n_images", "n_errors", "accuracy", "real_accuracy", "fake_accuracy",
                                                  "auc", "ap", "per_generator", "attribution")}
        row[key]["img_per_s"] = round(metrics["n_images"] / wall, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["machine"] = machine()
    row["date"] = date.today().isoformat()
    row["command"] = f"python -m benchmarks.accuracy run {name}" + (f" --vit {vit}" if row_name != name else "")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    row["aigi_commit"] = commit.stdout.strip() or None
    return row


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.2f}" if pct else f"{x:.4f}"


def report(results: Path = RESULTS, markdown: Path = BENCHMARKS_MD) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*.json")) if p.name != "throughput.json"]
    order = list(CONFIGS)
    config_of = lambda r: r["name"].split("@")[0]  # noqa: E731  (NAME@vit rows: --vit)
    rows.sort(key=lambda r: (order.index(config_of(r)) if config_of(r) in order else 99, r["name"]))
    lines = ["## Accuracy", "",
             "Trained on the train split of `cifake-dev.zip` (sha1 split rule), best epoch on val, scored on the test "
             "split. *Generalization*: the same model on sd15-styles fakes (generators never seen) vs "
             "real-photos-dev reals, both cropped to 320 px and re-encoded as JPEG q95 4:4:4 "
             "(`python -m benchmarks.datasets generalization`), at the model's stored threshold. "
             "Each row: `python -m benchmarks.accuracy run NAME`; table: `python -m benchmarks.accuracy report`.", "",
             *table(["configuration", "backbone", "tune", "trainable params", "input px", "train images", "epochs",
                     "train wall", "peak RSS", "infer img/s", "test acc", "real acc", "fake acc", "AUC", "AP", "gen. AUC",
                     "gen. acc"], "lll" + "r" * 14)]
    for r in rows:
        if config_of(r).endswith("-attribution"):
            continue
        t, g = r["test"], r.get("generalization", {})
        lines.append(row([
            f"{r['name']} ({r['what']})", r["backbone"], r["tune"], f"{r['trainable_params']:,}", r["input_px"],
            f"{r['train_images']:,}", r["epochs"], f"{r['train_wall_s'] / 60:.1f} min", f"{r['peak_rss_mb']:.0f} MB",
            t["img_per_s"], _fmt(t["accuracy"]), _fmt(t["real_accuracy"]), _fmt(t["fake_accuracy"]),
            _fmt(t["auc"], False), _fmt(t["ap"], False), _fmt(g.get("auc"), False), _fmt(g.get("accuracy"))]))
    attribution = [r for r in rows if config_of(r).endswith("-attribution")]
    if attribution:
        lines += ["", "### Attribution (4 sources, 32 px, JPEG q95 4:4:4 for every source)", "",
                  "Sources: `real` (3,000 CIFAKE reals, the 158 real-photos-dev photos and 4 colour photos scikit-image "
                  "ships: astronaut, chelsea, coffee, rocket), `sd14` (3,000 CIFAKE fakes), "
                  "`deliberate-2-0` and `dreamshaper-3-2` (sd15-styles), each centre-cropped and Lanczos-downscaled to "
                  "32 px (`python -m benchmarks.datasets attribution`). Test split only.", ""]
        for r in attribution:
            a = r["test"]["attribution"]
            lines += [f"**{r['name']}** ({r['what']}; {r['trainable_params']:,} trainable params, {r['train_images']:,} "
                      f"train images, {r['epochs']} epochs, {r['train_wall_s'] / 60:.1f} min): attribution accuracy "
                      f"{_fmt(a['accuracy'])}%, macro F1 {_fmt(a['macro_f1'], False)}; detection accuracy "
                      f"{_fmt(r['test']['accuracy'])}%, AUC {_fmt(r['test']['auc'], False)}.", "",
                      *table(["true \\ predicted", *a["labels"], "recall"], "l" + "r" * (len(a["labels"]) + 1))]
            for label, counts in zip(a["labels"], a["confusion"]):
                n = sum(counts)
                recall = counts[a["labels"].index(label)] / n if n else None
                lines.append(row([label, *counts, f"{_fmt(recall)}%"]))
            lines.append("")
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    bundled = ROOT / "src" / "aigi" / "models" / "default" / "config.json"
    if bundled.exists():
        test = json.loads(bundled.read_text()).get("metrics", {}).get("test", {})
        lines += ["", "### Bundled default model", "",
                  "Trained on the train splits of all of ../shared/data (`python -m benchmarks.bundle_default`; "
                  "see MODEL_CARD.md), scored on test splits it never saw; the last row, every sd15-styles fake, "
                  "includes its training fakes and is the fake recall `aigi eval` reports on that folder:", "",
                  *table(["set", "images", "accuracy", "real acc", "fake acc", "AUC"], "lrrrrr")]
        lines += [row([name, t["n_images"], _fmt(t["accuracy"]), _fmt(t["real_accuracy"]), _fmt(t["fake_accuracy"]),
                       _fmt(t["auc"], False)]) for name, t in test.items()]
    if rows:
        lines += ["", f"Machine: {rows[0]['machine']}. Dates: {', '.join(sorted({r['date'] for r in rows}))}."]
        replace_between(ROOT / "README.md", HEADLINE_MARKERS, headline(rows))
    section = "\n".join(lines) + "\n"
    update_markdown(markdown, section)
    return section


HEADLINE_MARKERS = ("<!-- headline table: python -m benchmarks.accuracy report -->", "<!-- end of headline table -->")


def headline(rows: list[dict]) -> str:
    """The short table README shows: one line per detection row, best test accuracy first."""
    rows = sorted((r for r in rows if "generalization" in r), key=lambda r: -(r["test"]["accuracy"] or 0))
    lines = table(["configuration", "input px", "train images × epochs", "train wall (2 CPU cores unless a GPU is named)",
                   "CIFAKE test acc", "AUC", "unseen generators: AUC"], "lrrrrrr")
    lines += [row([r["name"], r["input_px"], f"{r['train_images']:,} × {r['epochs']}",
                   f"{r['train_wall_s'] / 60:.1f} min{_gpu_of(r)}", f"{_fmt(r['test']['accuracy'])}%",
                   _fmt(r["test"]["auc"], False), _fmt(r["generalization"].get("auc"), False)]) for r in rows]
    return "\n".join(lines)


def _gpu_of(row: dict) -> str:
    gpu = row.get("machine", "").rsplit(", ", 1)[-1]
    return "" if gpu in ("", "no GPU") else f" on {gpu}"


def main(argv: list[str] | None = None) -> None:
    parser, sub = subcommands(__doc__)
    p = sub.add_parser("run")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true")
    p.add_argument("--workdir", default=None, help="where models and reports go (default: a temp dir)")
    p.add_argument("--vit", default=None,
                   help="pretrained ViT for the rows that use the zoo DINOv2, e.g. openai/clip-vit-base-patch32 "
                        "(hub id or local dir); rows are stored as NAME@<id>")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("report")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for name, (what, overrides) in CONFIGS.items():
            print(f"{name:28s} {what}  {overrides}")
        return
    if args.cmd == "report":
        print(report())
        return
    names = [n for n, (_, o) in CONFIGS.items() if not o.get("needs_gpu")] if args.all else args.names
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        parser.error(f"choose names from: {', '.join(CONFIGS)} (or --all)")
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aigi-bench-")) / name
        if args.in_process:
            row = run_one(name, workdir, args.vit)
            (RESULTS / f"{row['name']}.json").write_text(json.dumps(row, indent=2) + "\n")
            print(json.dumps({k: row[k] for k in ("name", "train_wall_s", "peak_rss_mb")}), row["test"]["accuracy"])
        else:  # a child process per row: its peak RSS is its own
            subprocess.run([sys.executable, "-m", "benchmarks.accuracy", "run", name, "--in-process",
                            "--workdir", str(workdir.parent)] + (["--vit", args.vit] if args.vit else []),
                           check=True, cwd=ROOT)
    report()


if __name__ == "__main__":
    main()
