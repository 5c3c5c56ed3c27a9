"""What ``aigi train`` is asked to do: :class:`TrainConfig`, one field per command-line option.

Stored as ``OUT/train_config.json`` (a resumed run reads it back) and in the saved model's
config (``training.config``). :mod:`aigi.training.probe` compares some of its fields to tell
whether two runs' encoded draws can be shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoders.backbones import DEFAULT_BACKBONE, FROM_SCRATCH_BACKBONES
from ..io.augment import policy_set
from ..io.samples import SPLITS

TUNE_MODES = ("full", "last-k", "lora", "linear", "probe", "top-k")


@dataclass
class TrainConfig:
    data: str | list[str]  # one dataset, or several trained on together
    out: str = "runs/aigi"
    split: str = "train"
    backbone: str = DEFAULT_BACKBONE
    tune: str = "full"
    epochs: int = 12
    batch_size: int = 32
    lr: float | None = None  # encoder learning rate; None picks one for the tuning mode
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of all steps spent warming up, then cosine decay
    last_k: int = 2  # blocks trained by --tune last-k and top-k
    top_passes: int = 2  # --tune top-k: passes of the last blocks over all the cached draws
    lora_rank: int = 8
    image_size: int | None = None  # crop side (native) or input size (resize); default: the backbone's
    native: bool = True  # native-resolution crops (False: the whole image resized, as aigi 0.1 did)
    crops: int = 4  # crops per image when the model scores (stored with the model)
    min_side: int = 32  # images smaller than this are too small to judge
    scales: tuple[float, ...] = (1.0,)  # native views: 1.0 the image's pixels, 0.5 half size as well
    probe_l2: float = 3e-4  # --tune probe: L2 on the standardised features' head weights
    probe_features: str | None = None  # --tune probe: reuse an earlier probe run's encoded draws (aigi.training.probe)
    augment: str = "light"  # a level (none, light, robust) or policies joined by "+" (aigi.io.augment)
    epoch_images: int | None = None  # draws per epoch (default: the train set's size)
    small_share: float = 0.2  # share of draws from images smaller than the crop (both bands present)
    source_power: float = 0.5  # source balance: share ~ count ** power (trainset.draw_weights)
    max_images: int | None = None
    max_val_images: int | None = None
    source_loss_weight: float = 0.5
    target_fpr: float | None = None
    precision: str = "auto"  # auto | bf16 | fp32
    workers: int = 1
    seed: int = 0
    cache_features: bool = True  # linear + no augmentation: encode each image once
    save_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    memory_mb: float = 0.0  # > 0: also write the record of training features aigi adapt replays (aigi.training.adapt)
    resume: bool = False
    progress: bool = True
    stop_after_steps: int | None = field(default=None, repr=False)  # tests: simulate a kill

    def encoder_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.backbone in FROM_SCRATCH_BACKBONES:
            return 5e-4  # random initial weights: nothing to preserve
        return {"full": 1e-5, "last-k": 3e-5, "lora": 3e-4, "linear": 0.0, "probe": 0.0, "top-k": 2e-5}[self.tune]

    def validate(self) -> None:
        if self.tune not in TUNE_MODES:
            raise ValueError(f"--tune must be one of {', '.join(TUNE_MODES)}, got {self.tune!r}")
        try:
            policy_set(self.augment)
        except ValueError as e:
            raise ValueError(f"--augment: {e}") from None
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError("--precision must be auto, bf16 or fp32")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be positive")
        if self.split not in SPLITS or self.split == "val":
            raise ValueError("--split must be train, test or all: the val split is held out to choose the best "
                             "epoch and to calibrate, so it can never be trained on")


__all__ = ["TUNE_MODES", "TrainConfig"]
