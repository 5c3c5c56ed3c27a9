"""Resume checkpoints: weights, optimizer moments and RNG as safetensors, counters as JSON.

Written atomically (a new folder renamed over the old one), so a kill at any moment leaves
either the previous checkpoint or the new one, never half of each. Never pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_checkpoint(directory: Path, detector: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimizer moments and RNG as safetensors, counters as JSON; written atomically."""
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in detector.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for idx, param_state in opt["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{idx}.{key}"] = torch.as_tensor(value).reshape(-1).contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "param_groups": opt["param_groups"]}, indent=1))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


def load_checkpoint(directory: Path, detector: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    state = json.loads((directory / "state.json").read_text())
    detector.load_state_dict(load_file(str(directory / "model.safetensors")))
    tensors = load_file(str(directory / "optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = value.reshape(()) if key == "step" else value
    # Moments were flattened to save them; give them back their parameter's shape.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, st in opt_state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key] = st[key].reshape(params[idx].shape)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    return state


def recover_interrupted_save(directory: Path) -> None:
    # A kill between the two renames of save_checkpoint leaves only "<dir>.old": take it back.
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and old.exists():
        os.replace(old, directory)
