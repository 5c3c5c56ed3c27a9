"""New generators in minutes: refit a detector's heads on a few examples, encoder untouched.

``aigi adapt --model M --add GENERATOR=PATH... [--real PATH...] --out DIR``

1. **Features.** The new images (K per generator, and new camera photos if given) go through
   the frozen encoder once (:mod:`aigi.inference.embed`: the pooled features the heads see).
2. **What the model knew** comes from its *record* (``memory.safetensors`` beside the
   weights): pooled features of a class- and source-balanced sample of its training images
   (the fit part) and of its validation images (the held-out part), float16, at most
   ``max_mb`` (4 MB: ~1,600 images at Lite0's 1,280-d, ~2,700 at CLIP's 768-d). A *sample*
   rather than per-class statistics because the heads are fitted with the losses training
   used (logistic and softmax), which need examples, not moments: a full covariance per class
   would cost D² numbers per class (1,280² x 35 classes is ~230 MB in float32) and a diagonal
   one drops the correlations a linear head relies on, while replaying real feature vectors
   keeps every class's shape at a bounded, small size. ``aigi train --memory-mb 4`` writes it
   at the end of training, ``aigi memory MODEL DATA`` for a model that has none, and
   ``aigi adapt --train-data DATA`` makes it on the fly.
3. **Refit.** Both heads are fitted again (full-batch L-BFGS, float64) on record + new
   features, starting from the old heads and pulled towards them (L2 on the change, scaled
   by the features' mean square, ``l2``): the old generators keep their place because their
   examples are replayed and the heads cannot drift far. Weights: reals and fakes half each;
   among fakes the new generators together get ``new_weight`` (default 0.5, split equally
   between them), the record's fakes the rest; new reals likewise among reals. The source
   head gains one row per new generator (labels keep their order; new ones are appended).
4. **Recalibration.** The temperature is fitted again on held-out features: the record's
   validation part plus 1 in 5 of the new images (chosen by a hash of their path) when a
   generator has 10 or more; fewer are all used for fitting. The threshold keeps the model's
   rule: a target false-positive rate is applied again to the held-out reals; a fixed
   threshold stays.
5. **Output.** A new model directory: the encoder tensors copied byte for byte from the old
   weights file, the new heads, ``config.json`` with ``adaptations`` (generator, K, source
   paths, date, ...) appended, and the record grown by the new images (so a later
   adaptation does not forget this one), still within its size bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..inference.embed import collect_samples, encoder_digest, sha256_file
from ..io.datasets import load_datasets
from ..io.decode import DECODE_WORKERS
from ..io.samples import REAL, Sample
from .heads import HeadFit, fit_heads
from .memory import DEFAULT_MEMORY_MB, MEMORY_NAME, Memory, build_memory, embed_rows, trim_memory

if TYPE_CHECKING:
    from ..detector.model import Detector

HELD_OUT_EVERY = 5  # 1 in 5 new images is held out for calibration ...
HELD_OUT_MIN_K = 10  # ... when a group has at least this many
HEAD_PREFIXES = ("binary_head.", "source_head.")


def row_weights(labels: np.ndarray, groups: Sequence[str], new_groups: Iterable[str], new_weight: float) -> np.ndarray:
    """Reals and fakes half each; within a class, the ``new_groups`` present share ``new_weight``
    equally and the other rows share the rest uniformly (all of it when a side is empty)."""
    labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
    new = np.isin(groups, list(new_groups))
    w = np.zeros(len(labels))
    classes = [c for c in (0, 1) if (labels == c).any()]
    for c in classes:
        in_class = labels == c
        new_here = sorted(set(groups[in_class & new]))
        old = in_class & ~new
        share_new = (new_weight if old.any() else 1.0) if new_here else 0.0
        if old.any():
            w[old] = (1.0 - share_new) / old.sum()
        for g in new_here:
            rows = in_class & (groups == g)
            w[rows] = share_new / len(new_here) / rows.sum()
        w[in_class] /= len(classes)
    return w


def _held_out_mask(paths: Sequence[str]) -> np.ndarray:
    """1 in :data:`HELD_OUT_EVERY` of a group's images (by sha1 of the path: the same ones on
    every run), when the group has at least :data:`HELD_OUT_MIN_K`."""
    held = np.zeros(len(paths), dtype=bool)
    if len(paths) >= HELD_OUT_MIN_K:
        order = sorted(range(len(paths)), key=lambda i: hashlib.sha1(paths[i].encode("utf-8", "surrogateescape")).hexdigest())
        held[[i for k, i in enumerate(order) if k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]] = True
    return held


# ----------------------------------------------------------------------------- adapt


def _resolve_memory(detector: "Detector", model_dir: Path | None, memory, train_data, real_samples, max_mb, seed,
                    batch_size, workers, progress) -> tuple[Memory, str]:
    if isinstance(memory, Memory):
        return memory, "given"
    if memory is not None:
        return Memory.load(memory), f"file {memory}"
    if model_dir is not None and (model_dir / MEMORY_NAME).exists():
        return Memory.load(model_dir / MEMORY_NAME), f"{model_dir / MEMORY_NAME}"
    name = getattr(detector, "name_or_path", "") or "the model"
    if train_data:
        data = list(train_data)
        train_set, val_set = load_datasets(data, "train"), load_datasets(data, "val")
        made = build_memory(detector, train_set.samples, val_set.samples, max_mb, seed=seed, batch_size=batch_size,
                            workers=workers, progress=progress, how=f"by aigi adapt from {' + '.join(map(str, data))}")
        return made, f"made from --train-data {' + '.join(map(str, data))}"
    if real_samples:
        print(f"aigi adapt: {name} has no record of its training data ({MEMORY_NAME}); one is made from the --real "
              "images, which holds no AI-generated images of the old generators: the refit is held near the old "
              "heads, but nothing replays those generators (pass --train-data to keep them)", file=sys.stderr)
        made = build_memory(detector, real_samples, (), max_mb, val_share=0.0, seed=seed, batch_size=batch_size,
                            workers=workers, progress=progress, how="by aigi adapt from the --real images")
        return made, "made from --real"
    raise ValueError(
        f"{name} has no record of its training data ({MEMORY_NAME} beside its weights): refitting the heads on the new "
        f"images alone would forget what it knew. Pass --train-data with (a sample of) the data it was trained on, "
        f"or make the record once with `aigi memory {name} DATA...` (aigi train --memory-mb 4 writes it at the end "
        "of training)")


def _raw_encoder_tensors(detector: "Detector") -> dict:
    """The non-head tensors exactly as stored (so the new file's encoder is the old one's, byte
    for byte), or as loaded for a model that was not read from one file (``univfd``)."""
    from safetensors.torch import load_file

    path = getattr(detector, "weights_path", None)
    state = load_file(str(path)) if path else {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def adapt(
    model: "str | os.PathLike | Detector",
    add: Mapping[str, Sequence[str | os.PathLike | Sample]],
    out: str | os.PathLike,
    real: Sequence[str | os.PathLike | Sample] = (),
    memory: "str | os.PathLike | Memory | None" = None,
    train_data: Sequence[str | os.PathLike] = (),
    max_mb: float = DEFAULT_MEMORY_MB,
    new_weight: float = 0.5,
    l2: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
    workers: int = DECODE_WORKERS,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Write to ``out`` a detector that also knows the generators of ``add`` (name -> images:
    files, folders, zips, CSV manifests or samples), by the steps of the module docstring.
    ``real``: new camera photos for the real class. Returns the adaptation record (also stored
    in ``out/config.json`` under ``adaptations``)."""
    import torch

    from ..detector.model import Detector, json_default
    from ..detector.registry import CONFIG_NAME, WEIGHTS_NAME
    from .calibration import calibrate

    started = time.time()
    if not add:
        raise ValueError("nothing to add: give at least one --add GENERATOR=PATH")
    if not 0 < new_weight < 1:
        raise ValueError(f"new_weight must be between 0 and 1, got {new_weight}")
    detector = model if isinstance(model, Detector) else Detector.from_pretrained(model, device=device)
    detector.eval()
    model_dir = (Path(detector.weights_path).parent if getattr(detector, "weights_path", None)
                 else getattr(detector, "model_dir", None))
    out = Path(out)
    if model_dir is not None and out.resolve() == model_dir.resolve():
        raise ValueError(f"--out {out} is the model's own directory: write the adapted model to a new one")
    if REAL in add:
        raise ValueError(f"{REAL!r} is not a generator: pass new camera photos with --real")

    real_samples = collect_samples(list(real)) if real else []
    mem, mem_from = _resolve_memory(detector, model_dir, memory, train_data, real_samples, max_mb, seed, batch_size,
                                    workers, progress)
    if mem.encoder_sha256 != encoder_digest(detector):
        raise ValueError(f"the record ({mem_from}) was made with another encoder than this model's: features "
                         "of another encoder mean nothing to these heads; make it again with `aigi memory`")
    # Record rows of a source the model has no label for (a record made from data it was not
    # trained on as such, e.g. univfd's) teach the binary head only.
    unlabelled = sorted(set(mem.sources) - set(detector.labels) - set(add))

    marks = {"load_and_record": time.time()}  # when each step ended, for the timing record
    # 1. the new images' features
    new_parts, added, unreadable = [], [], {}
    groups_new = []
    for name, paths in list(add.items()) + ([(REAL, real)] if real else []):
        samples = real_samples if name == REAL else collect_samples(list(paths))
        if not samples:
            raise ValueError(f"--add {name}: no image files found in {', '.join(map(str, paths))}")
        kept, feats, problems = embed_rows(detector, samples, batch_size, workers, progress, f"embedding {name}")
        for path, reason in problems:
            print(f"aigi adapt: skipped {path}: {reason}", file=sys.stderr)
        if not kept:
            raise ValueError(f"--{'real' if name == REAL else 'add ' + name}: none of the {len(samples)} image(s) "
                             "could be read")
        held = _held_out_mask([s.display for s in kept])
        group = f"adapt:{name}"
        groups_new.append(group)
        new_parts.append(Memory(feats, np.full(len(kept), 0 if name == REAL else 1), [name] * len(kept),
                                [group] * len(kept), held, mem.encoder_sha256))
        unreadable[name] = len(problems)
        added.append({"generator": name, "k": len(kept), "n_fit": int((~held).sum()), "n_held_out": int(held.sum()),
                      "unreadable": len(problems), "sources": [str(p.display if isinstance(p, Sample) else p)
                                                               for p in paths],
                      "new_label": name not in detector.labels})
    new = Memory.concat(new_parts)
    everything = Memory.concat([mem, new])
    labels = list(detector.labels) + [g for g in add if g not in detector.labels]

    marks["embed"] = time.time()
    # 2. refit on the fit rows
    fit = everything.take(np.flatnonzero(~everything.held_out))
    if not (fit.labels == 0).any():
        raise ValueError("no real images to fit against: the record holds none and no --real was given")
    weights = row_weights(fit.labels, fit.groups, groups_new, new_weight)
    index = {label: i for i, label in enumerate(labels)}
    src = np.array([index.get(s, -1) for s in fit.sources])
    dim = int(detector.encoder.feature_dim)
    sd = {k: v.detach().cpu().double().numpy() for k, v in detector.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    old_src_w, old_src_b = sd["source_head.weight"], sd["source_head.bias"]
    extra = len(labels) - len(detector.labels)
    gen_bias = float(np.mean(old_src_b[1:])) if len(old_src_b) > 1 else float(old_src_b[0])
    init = HeadFit(sd["binary_head.weight"], sd["binary_head.bias"],
                   np.concatenate([old_src_w, np.zeros((extra, dim))]), np.concatenate([old_src_b, np.full(extra, gen_bias)]),
                   {})
    cfg_train = (detector.config.get("training") or {}).get("config") or {}
    heads = fit_heads(fit.features, fit.labels, src, weights, init, l2=l2,
                      source_loss_weight=float(cfg_train.get("source_loss_weight", 0.5)))

    marks["fit"] = time.time()
    # 3. the adapted detector (sharing the encoder module: no copy of its weights in memory)
    config = dict(detector.config)
    adapted = Detector(detector.encoder, detector.preprocessing, labels, config)
    with torch.no_grad():
        for module, w, b in ((adapted.binary_head, heads.binary_weight, heads.binary_bias),
                             (adapted.source_head, heads.source_weight, heads.source_bias)):
            module.weight.copy_(torch.from_numpy(w).float())
            module.bias.copy_(torch.from_numpy(b).float())
    adapted.to(detector.device).eval()
    config = adapted.config

    # 4. recalibrate on held-out rows (scores from the float32 heads that will be saved)
    held = everything.take(np.flatnonzero(everything.held_out))
    old_cal = (config.get("training") or {}).get("calibration") or {}
    target_fpr = old_cal.get("target_fpr")
    before = {"temperature": detector.temperature, "threshold": detector.threshold}
    config["temperature"] = 1.0
    if len(held) and len(set(held.labels.tolist())) == 2:
        with torch.no_grad():
            logits = adapted.binary_head(torch.from_numpy(held.features).to(adapted.device)).squeeze(-1).double().cpu().numpy()
        calibration = calibrate(adapted, 1.0 / (1.0 + np.exp(-logits)), held.labels.astype(float), target_fpr)
        calibration["by"] = "aigi adapt"
        calibration["threshold_rule"] = f"target FPR {target_fpr:g} on held-out reals" if target_fpr else "kept"
        config.setdefault("training", {})["calibration"] = calibration
    else:
        config["temperature"] = before["temperature"]
        calibration = {"method": "none", "reason": "no held-out real and fake features (the record has no "
                       "validation part and no generator has 10 new images): temperature kept"}

    marks["calibrate"] = time.time()
    # 5. write the model: the old encoder bytes, the new heads, config, the grown record
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "aigi_version": __version__,
        "base_model": {"name": getattr(detector, "name_or_path", ""),
                       "weights_sha256": sha256_file(detector.weights_path) if getattr(detector, "weights_path", None) else None},
        "added": [a for a in added if a["generator"] != REAL],
        "real": next(({k: a[k] for k in ("k", "n_fit", "n_held_out", "unreadable", "sources")}
                      for a in added if a["generator"] == REAL), None),
        "record": {"from": mem_from, **mem.summary(), "binary_only_sources": unlabelled},
        "weights": {"new_weight": new_weight, "fakes_vs_reals": "half each"},
        "fit": heads.info,
        "calibration": {"before": before, "temperature": adapted.temperature, "threshold": adapted.threshold,
                        **{k: calibration.get(k) for k in ("method", "reason", "threshold_rule", "n_val", "n_val_real",
                                                            "n_val_fake") if k in calibration}},
    }
    config["adaptations"] = list(config.get("adaptations", [])) + [record]
    out.mkdir(parents=True, exist_ok=True)
    state = _raw_encoder_tensors(detector)
    for k, v in adapted.state_dict().items():
        if k.startswith(HEAD_PREFIXES):
            state[k] = v.detach().cpu().float().contiguous()
    from safetensors.torch import save_file

    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "aigi_version": __version__})
    os.replace(tmp, out / WEIGHTS_NAME)
    record["seconds"] = round(time.time() - started, 2)
    steps, last = {}, started
    for name, t in marks.items():
        steps[f"{name}_s"], last = round(t - last, 2), t
    record["timing"] = steps
    tmp = out / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(adapted.to_config(), indent=2, default=json_default) + "\n", encoding="utf-8")
    os.replace(tmp, out / CONFIG_NAME)
    grown = trim_memory(Memory.concat([mem, new]), max_mb, seed)
    grown.info = {**mem.info, "grown_by_adapt": [a["generator"] for a in added]}
    grown.save(out / MEMORY_NAME)
    if model_dir is not None:  # the licence and attribution of the weights go with them (not a model card: new model)
        for f in model_dir.iterdir():
            if f.is_file() and (f.name.upper().startswith(("LICENSE", "NOTICE")) or f.name == "README.md"):
                shutil.copy2(f, out / f.name)
    adapted.name_or_path, adapted.weights_path = str(out), out / WEIGHTS_NAME
    return {**record, "out": str(out), "seconds_total": round(time.time() - started, 2), "detector": adapted}


__all__ = ["HEAD_PREFIXES", "adapt", "row_weights"]
