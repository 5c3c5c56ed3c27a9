"""``aigi detect`` on camera-size photos: 12-megapixel JPEGs, end to end.

    python -m benchmarks.camera_size                 # 48 images, the bundled default model
    python -m benchmarks.camera_size --update-md     # also rewrite "## Camera-size photos" in BENCHMARKS.md

Makes ``--n-images`` synthetic 4000 x 3000 photos (gradients, shapes, fine detail and sensor
noise, as benchmarks/throughput.py makes them), saves them as a phone would (JPEG quality 92,
4:2:0, EXIF Make/Model; every third one stored sideways with an EXIF orientation), and times
``aigi detect FOLDER --out results.jsonl -q`` in a fresh process: img/s from its first request
for a prediction to its last (imports and model loading excluded), and including start-up.
The share of CPU used by other processes while it ran is recorded; a run above
``--max-other-cpu`` is repeated once and flagged if it stays above.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .harness import RESULTS, log, machine_info, measured, row, table, update_markdown, write_results
from .measure import run_cli
from .photos import synthetic_photo

OUT_JSON = RESULTS / "camera_size.json"
SECTION = "## Camera-size photos"
TARGET_IMG_PER_S = 8.0


def make_photos(folder: Path, n: int, width: int = 4000, height: int = 3000, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"IMG_{i:04d}.jpg"
        if not path.exists():
            base = synthetic_photo(np.random.default_rng([seed, i]), 1000)  # the scene, at 1 MP
            im = base.resize((width, height), Image.Resampling.BICUBIC)
            noise = np.random.default_rng([seed, i, 1]).normal(0, 4, (height, width, 3)).astype(np.float32)
            im = Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8))
            exif = Image.Exif()
            exif[0x010F], exif[0x0110] = "BenchCam", "Model 12MP"
            if i % 3 == 2:  # stored sideways, shown upright: the decoder rotates it
                im = im.transpose(Image.Transpose.ROTATE_90)
                exif[0x0112] = 6
            im.save(path, "JPEG", quality=92, subsampling=2, exif=exif)
        paths.append(path)
    return paths


def render(data: dict) -> str:
    r = data["run"]
    ok = "✅" if r["img_per_s"] >= TARGET_IMG_PER_S else "❌"
    flag = " (other processes used {:.0%} of the CPUs during the run)".format(r["other_cpu"]) if r.get("disturbed") else ""
    return "\n".join([
        SECTION, "",
        f"`{data['command']}` on {data['machine']['cpu']}, {data['machine']['cores']} cores, {data['date']}{flag}. "
        f"{r['images']} synthetic 4000 x 3000 JPEGs (quality 92, 4:2:0, a third stored sideways with an EXIF "
        f"orientation), model `{data['model']}` ({data['crops']} crops of {data['crop']} px per image, at scales 1 and 0.5 where the model has both, "
        f"{data['precision']}).", "",
        *table(["img/s (first to last prediction)", "img/s incl. start-up", "start-up s", "peak RSS MB", "other CPU",
                "target"], "rrrrrl"),
        row([f"{r['img_per_s']:.1f} {ok}", f"{r['img_per_s_incl_startup']:.1f}", f"{r['startup_s']:.1f}",
             f"{r['peak_rss_mb']:.0f}", f"{r.get('other_cpu', 0):.0%}", f"at least {TARGET_IMG_PER_S:g} img/s"]), "",
        f"Command run by the benchmark: `{r['cli']}`.", "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--n-images", type=int, default=48)
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: aigi detect's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runtime", default="torch-fp32", choices=["torch-fp32", "torch-bf16", "onnx"])
    p.add_argument("--max-other-cpu", type=float, default=0.10)
    p.add_argument("--tmp", help="work folder (default: a temporary one, removed afterwards)")
    p.add_argument("--update-md", action="store_true")
    p.add_argument("--md", default="BENCHMARKS.md")
    args = p.parse_args(argv)
    from aigi.detector.model import Detector
    from aigi.detector.registry import resolve_model_path
    from aigi.io.decode import DECODE_WORKERS

    model_dir = resolve_model_path(args.model)
    prep = Detector.from_pretrained(model_dir).preprocessing
    tmp_ctx = tempfile.TemporaryDirectory(prefix="aigi-camera-") if not args.tmp else None
    tmp = Path(args.tmp or tmp_ctx.name)
    try:
        log(f"making {args.n_images} 12-megapixel JPEGs in {tmp}")
        make_photos(tmp / "photos", args.n_images)
        workers = args.workers or DECODE_WORKERS
        record = measured(lambda: run_cli(tmp / "photos", model_dir, tmp / "out", workers, args.batch_size, args.runtime),
                          "aigi detect", args.max_other_cpu)
        data = {"benchmark": "camera_size", "date": time.strftime("%Y-%m-%d"),
                "command": " ".join(["python -m benchmarks.camera_size", *(sys.argv[1:] if argv is None else argv)]),
                "machine": machine_info(), "model": args.model, "crops": prep.crops * len(prep.scales), "crop": prep.crop,
                "precision": args.runtime, "run": record}
        write_results(OUT_JSON, data, indent=2)
        section = render(data)
        print(section)
        if args.update_md:
            update_markdown(Path(args.md), section)
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
        elif args.tmp:
            shutil.rmtree(tmp / "out", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
