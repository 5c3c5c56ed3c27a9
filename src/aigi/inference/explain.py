"""Heatmaps: where in an image the model saw AI generation.

:func:`heatmap` draws an image with each scored crop's ``p_fake`` over it (a semi-transparent
colour per crop box, the value written in its corner, a colour bar with the threshold marked,
the verdict and p_fake in the title). It is what ``aigi explain IMAGE --out heat.png`` writes
and what ``aigi eval`` shows for its worst mistakes. matplotlib's Agg canvas is used directly
(no pyplot, no display, no global state), so it is safe in threads and on servers.
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
from PIL import Image

from ..detector.scoring import Prediction
from ..io.inputs import decode_source
from ..io.samples import ImageDecodeError

CMAP = "RdYlBu_r"  # blue: camera-like, red: AI-like; readable with red-green colour blindness
MAX_SIDE = 1024  # the image is shown at most this large (keeps PNGs small)


def _title(prediction: Prediction, threshold: float | None) -> str:
    name = os.path.basename(prediction.path.split("::")[-1]) or prediction.path
    if prediction.error:
        return f"{name}: not scored ({prediction.error})"
    if prediction.p_fake is None:
        head = f"{prediction.verdict}: {prediction.note}"
    else:
        head = f"{prediction.verdict}, p_fake {prediction.p_fake:.3f}"
        if threshold is not None:
            head += f" (threshold {threshold:.3f})"
        if prediction.generator:
            p_gen = f" {prediction.p_generator:.2f}" if prediction.p_generator is not None else ""
            head += f"; generator {prediction.generator}{p_gen}"
    if prediction.pixel_verdict and prediction.pixel_verdict != prediction.verdict:
        head += f"; pixels alone: {prediction.pixel_verdict}"
    return f"{name}: {head}"


def heatmap(image: Image.Image, prediction: Prediction, threshold: float | None = None,
            band: tuple[float, float] | None = None, dpi: int = 100) -> Image.Image:
    """``image`` with ``prediction.crops`` drawn over it, as a new RGB image.

    Crop boxes are in the pixels of the image the model decoded (``prediction.image_size``);
    they are scaled to ``image``, so the image may be given at any size (the full-resolution
    file, a thumbnail). ``threshold`` and ``band`` (the model's) are marked on the colour bar.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    w, h = image.size
    src_w, src_h = prediction.image_size or [w, h]
    sx, sy = w / max(src_w, 1), h / max(src_h, 1)

    # Inches: the image 5.6 wide, a title band above it, the colour bar to its right.
    img_w, title_h, margin = 5.6, 0.55, 0.1
    img_h = img_w * h / w
    fig_w, fig_h = img_w + 1.5, img_h + title_h + 2 * margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((margin / fig_w, margin / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(np.asarray(image))
    ax.set_axis_off()
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CMAP)
    colours = mappable.to_rgba
    font = max(6, min(11, int(min(w, h) / 40)))
    for crop in prediction.crops:
        left, top, right, bottom = crop["box"]
        p = float(crop["p_fake"])
        x0, y0, bw, bh = left * sx, top * sy, (right - left) * sx, (bottom - top) * sy
        ax.add_patch(Rectangle((x0, y0), bw, bh, facecolor=colours(p, alpha=0.35), edgecolor=colours(p), lw=2))
        ax.text(x0 + 4, y0 + 4, f"{p:.2f}", va="top", ha="left", fontsize=font, color="white",
                bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "lw": 0})
    ax.set_title(textwrap.fill(_title(prediction, threshold), 80), fontsize=9)
    cax = fig.add_axes(((img_w + 0.35) / fig_w, (margin + 0.1 * img_h) / fig_h, 0.18 / fig_w, 0.8 * img_h / fig_h))
    bar = fig.colorbar(mappable, cax=cax)
    bar.set_label("p_fake of each crop (red: AI-like" + ("; grey: uncertain band)" if band else ")"), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if band is not None:
        bar.ax.axhspan(band[0], band[1], color="grey", alpha=0.45)
    if threshold is not None:
        bar.ax.axhline(threshold, color="black", lw=1.5)
    if not prediction.crops:
        ax.text(w / 2, h / 2, "no crops scored", ha="center", va="center", fontsize=12, color="white",
                bbox={"facecolor": "black", "alpha": 0.6})
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def save_heatmap(image: Image.Image, prediction: Prediction, path: str | os.PathLike, **kwargs) -> str:
    """:func:`heatmap` written as a PNG (optimised: these go into reports and READMEs)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    small_png(heatmap(image, prediction, **kwargs)).save(path, "PNG", optimize=True)
    return os.fspath(path)


def small_png(image: Image.Image) -> Image.Image:
    """A 256-colour version of a heatmap: a photo as a true-colour PNG is several hundred KB,
    this about a third of that, and the boxes and text stay sharp."""
    return image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def explain(detector, source, crops: int | None = None, evidence: bool = True) -> tuple[Prediction, Image.Image | None]:
    """Score one image (a path, ``Sample``, bytes or PIL image) and draw its heatmap:
    ``(prediction, heatmap image)``; the image is None when the file could not be read.
    ``crops=N``: N crops in all, shared between the model's scales, as ``Detector.predict``."""
    (prediction,) = detector.predict([source], crops=crops, evidence=evidence)
    if prediction.error:
        return prediction, None
    try:
        image = decode_source(source, name=prediction.path)  # full size: the boxes are scaled to it
    except ImageDecodeError as e:  # changed or removed since it was scored
        prediction.error = e.reason
        return prediction, None
    point = detector.operating_point
    return prediction, heatmap(image, prediction, threshold=point.threshold, band=point.band)


__all__ = ["explain", "heatmap", "save_heatmap"]
