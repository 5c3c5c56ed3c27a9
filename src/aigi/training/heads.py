"""Both heads fitted at once on fixed features: full-batch L-BFGS in float64.

Used where the encoder is frozen and its features are at hand: ``aigi adapt`` refits the heads
on the record plus new images, held near the old heads (:mod:`aigi.training.adapt`), and
``--tune probe`` fits them from zero on every draw's features (:mod:`aigi.training.probe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HeadFit:
    binary_weight: np.ndarray  # (1, D)
    binary_bias: np.ndarray  # (1,)
    source_weight: np.ndarray  # (L, D)
    source_bias: np.ndarray  # (L,)
    info: dict


def fit_heads(x: np.ndarray, y: np.ndarray, source: np.ndarray, weight: np.ndarray, init: HeadFit, l2: float = 0.01,
              source_loss_weight: float = 0.5, max_iter: int = 300) -> HeadFit:
    """Both heads on features ``x`` (n, D), labels ``y`` (0/1), source indices (-1: no source
    loss) and row weights (sum 1), by full-batch L-BFGS from ``init``, with
    ``l2 * mean(|x|^2) / D * |W - W_init|^2`` holding them near where they were."""
    import torch
    import torch.nn.functional as F

    X = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(y, np.float64))
    st = torch.from_numpy(np.asarray(source, np.int64))
    wt = torch.from_numpy(np.asarray(weight, np.float64))
    has_source = (st >= 0).double()
    src_norm = float((wt * has_source).sum()) or 1.0
    scale = float((X ** 2).sum(dim=1).mean()) / X.shape[1]
    start = [torch.from_numpy(np.asarray(a, np.float64)) for a in
             (init.binary_weight, init.binary_bias, init.source_weight, init.source_bias)]
    params = [t.clone().requires_grad_(True) for t in start]
    wb0, ws0 = start[0], start[2]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")
    evals = [0]

    def loss_fn() -> torch.Tensor:
        wb, bb, ws, bs = params
        binary = (wt * F.binary_cross_entropy_with_logits(X @ wb[0] + bb[0], yt, reduction="none")).sum()
        ce = F.cross_entropy(X @ ws.T + bs, st.clamp(min=0), reduction="none") * has_source
        penalty = l2 * scale * (((wb - wb0) ** 2).sum() + ((ws - ws0) ** 2).sum())
        return binary + source_loss_weight * (wt * ce).sum() / src_norm + penalty

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        evals[0] += 1
        return loss

    with torch.no_grad():
        loss_before = float(loss_fn())
    optimizer.step(closure)
    with torch.no_grad():
        loss_after = float(loss_fn())
    wb, bb, ws, bs = (p.detach().numpy() for p in params)
    return HeadFit(wb, bb, ws, bs, {"optimizer": "L-BFGS (strong Wolfe), float64", "l2": l2,
                                    "source_loss_weight": source_loss_weight, "evaluations": evals[0],
                                    "loss_before": round(loss_before, 6), "loss_after": round(loss_after, 6)})


__all__ = ["HeadFit", "fit_heads"]
