"""Which device a detector runs on: the name checked, and whether this machine has it, before torch
is asked.

torch's own answers to a bad device are a parse error deep in ``Module.to`` (``"gpu"``) or a bare
``AssertionError`` ("Torch not compiled with CUDA enabled") on a CPU-only build; both reach a
user as a traceback. :func:`resolve_device` says the same in one sentence, as a
:class:`DeviceError` (a ``RuntimeError``): :class:`UnknownDeviceError` (also a ``ValueError``)
for a name torch would not run on, :class:`DeviceUnavailableError` for a real device this
machine lacks.
"""

from __future__ import annotations

import re

import torch

DEVICE_HELP = "cpu, cuda or cuda:N (an NVIDIA GPU), or mps (Apple silicon)"
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


class DeviceError(RuntimeError):
    """A device a detector cannot run on here."""


class UnknownDeviceError(DeviceError, ValueError):
    """Not a device name aigi runs on (``gpu``, ``cuda:x``, ...)."""


class DeviceUnavailableError(DeviceError):
    """A real device that this machine or this torch build does not have (``cuda`` without CUDA)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or :class:`DeviceError` saying in one line why not."""
    name = str(device).strip()
    match = _DEVICE.fullmatch(name)
    if match is None:
        hint = " (for a GPU: cuda)" if name.lower() in ("gpu", "nvidia", "cuda0") else ""
        raise UnknownDeviceError(f"unknown device {name!r}{hint}: use {DEVICE_HELP}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceUnavailableError(f"device {name!r}: CUDA is not available here ({why}; torch "
                                         f"{torch.__version__}); use cpu")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA "
                                         f"GPU(s), numbered from 0")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {name!r}: Apple's MPS is not available here; use cpu")
    return torch.device(name)


__all__ = ["DEVICE_HELP", "DeviceError", "DeviceUnavailableError", "UnknownDeviceError", "resolve_device"]
