"""``aigi train`` on several processes: PyTorch's DistributedDataParallel, started by ``torchrun``.

Nothing changes on the command line: under ``torchrun --nproc-per-node N aigi train ...`` the
environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) is read here, the process group is joined (NCCL on GPUs, gloo on CPU), rank r
computes on ``cuda:LOCAL_RANK`` (or the CPU), and the model is wrapped in DDP. The rules that
make N processes train what one process does with the same global batch (``--batch-size`` is
the global batch):

- Every rank computes the same epoch draws (:func:`aigi.training.trainset.draw_order`, from the seed)
  and takes its share of each global batch: positions r, r + N, r + 2N, ... (:meth:`Dist.shard`).
  A draw's crop and augmentation come from (seed, epoch, draw), so it is the same whichever
  rank makes it.
- Each rank's loss is its mean times (its good samples x N / the batch's good samples, summed
  over ranks): DDP averages gradients over ranks, so the step uses the mean gradient over
  the whole global batch, as one process does, however unreadable files fall between ranks.
  A rank left with no readable sample in a step still runs forward and backward on a
  placeholder with weight 0, because DDP's all-reduce needs every rank.
- Only rank 0 validates, calibrates, writes checkpoints, the log and the final model; the
  loss and accuracy it logs are the global batch's. Every rank reads ``OUT/last`` on
  ``--resume``, so OUT must be visible at the same path on every node (as the data must).

BatchNorm backbones (EfficientNet-Lite0, cnn-small) normalise with each rank's own batch
statistics (its B / N crops) and keep rank 0's running statistics (DDP broadcasts buffers);
SyncBatchNorm is not used (PyTorch's runs on GPUs only). Transformer backbones (CLIP,
DINOv2, tiny-clip) use LayerNorm, which is per sample: for them N processes compute what one
does, up to the order of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
from torch import nn

TIMEOUT_ENV = "AIGI_DIST_TIMEOUT_MIN"  # how long ranks wait for each other (rank 0 validating), minutes


@dataclass
class Dist:
    """This process's place in the job: rank, world size, and the device it computes on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's share of one global batch: positions rank, rank + world, ..."""
        return list(items[self.rank::self.world])

    def sum(self, values: Sequence[float]) -> list[float]:
        """A few numbers summed over ranks (as they are, in one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)  # NCCL reduces device tensors only
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (small Python values: unreadable files' paths and reasons)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if not self.enabled:
            return module
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def from_env() -> Dist:
    """Join the job torchrun started (``WORLD_SIZE`` > 1), or a single process on CUDA if present."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, "60"))
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=minutes))
    return Dist(rank, world, local_rank, device, backend)


class TrainForward(nn.Module):
    """What DDP wraps: the detector on pixels, or its heads on cached features. DDP syncs the
    gradients of what runs through its module's forward, so both paths go through here."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor, features: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.detector.heads(x) if features else self.detector(x)
        return out.binary_logits, out.source_logits
