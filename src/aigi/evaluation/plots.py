"""The figures of an evaluation report: ROC curve, reliability diagram, attribution confusion matrix.

Each ``plot_*`` draws one PNG from a metrics dict (:func:`aigi.evaluation.metrics.compute_metrics`),
or returns a note saying why it cannot be drawn; matplotlib runs on its Agg backend (no display).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

def _save_figure(fig, ax, path: Path, legend_loc: str) -> None:
    """The common end of every plot: legend, grid, tight layout, write."""
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def plot_roc(metrics: dict, path: Path, title: str) -> str | None:
    """Draw roc.png; returns a note instead when the curve is undefined."""
    roc = metrics.get("roc_curve")
    if not roc or not roc.get("fpr"):
        return "ROC curve not drawn: the evaluated images contain only one class (real or fake)."
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    try:
        auc = metrics.get("auc")
        ax.plot(roc["fpr"], roc["tpr"], lw=2, label=f"detector (AUC = {auc:.4f})" if auc is not None else "detector")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        for t, tpr in (metrics.get("tpr_at_fpr") or {}).items():
            if tpr is not None:
                ax.plot([float(t)], [tpr], "o", ms=4, color="black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (reals called AI-generated)")
        ax.set_ylabel("true positive rate (fakes caught)")
        ax.set_title(f"{title}: ROC", fontsize=10)
        _save_figure(fig, ax, path, "lower right")
    finally:
        plt.close(fig)
    return None


def plot_reliability(metrics: dict, path: Path, title: str) -> str | None:
    """Draw reliability.png: observed fraction of fakes against mean p_fake per bin, counts shown."""
    bins = metrics.get("reliability") or []
    if not bins:
        return "Reliability diagram not drawn: no image was scored."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    try:
        x = [b["mean_p_fake"] for b in bins]
        y = [b["fraction_fake"] for b in bins]
        n = np.asarray([b["n"] for b in bins], dtype=np.float64)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
        ax.plot(x, y, "-", color="tab:blue", lw=1)
        ax.scatter(x, y, s=20 + 200 * n / n.max(), color="tab:blue", zorder=3, label="bins (area ~ images)")
        for xi, yi, ni in zip(x, y, n):
            ax.annotate(f"{int(ni)}", (xi, yi), textcoords="offset points", xytext=(3, 6 if yi < 0.5 else -11), fontsize=7)
        ece = metrics.get("ece")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel("mean p_fake in bin (numbers: images in the bin)")
        ax.set_ylabel("observed fraction of fakes")
        heading = f"{title}: reliability" + (f" (ECE {ece:.4f})" if ece is not None else "")
        ax.set_title(textwrap.fill(heading, 60), fontsize=9)  # long dataset names: wrap, do not cut
        _save_figure(fig, ax, path, "upper left")
    finally:
        plt.close(fig)
    return None


def plot_confusion(metrics: dict, path: Path, title: str) -> str | None:
    """Draw confusion.png (rows true source, columns predicted, counts annotated)."""
    att = metrics.get("attribution") or {}
    names, cm = att.get("labels") or [], np.asarray(att.get("confusion") or [], dtype=np.int64)
    if not names or cm.size == 0:
        return "Confusion matrix not drawn: the model has no source labels."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    side = min(3 + 0.6 * k, 16)
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=120)
    try:
        # Colour by the row-normalised rate so that small classes are as readable as big ones.
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of row")
        ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
        ax.set_yticks(range(k), labels=names)
        ax.set_xlabel("predicted source")
        ax.set_ylabel("true source")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
        ax.set_title(f"{title}: attribution", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return None


__all__ = ["plot_confusion", "plot_reliability", "plot_roc"]
