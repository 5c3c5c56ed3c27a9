"""The evaluation report: ``metrics.json``, the figures, ``predictions.csv`` and ``report.md``.

:func:`write_report` writes a metrics dict (:mod:`aigi.evaluation.metrics`) as files, with the
figures of :mod:`aigi.evaluation.plots`, the per-file predictions and a Markdown summary, and
shows the worst false positives and negatives with their heatmaps (:mod:`aigi.inference.explain`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..inference.explain import save_heatmap
from ..inference.writers import ResultWriter
from ..io.inputs import decode_source
from ..io.samples import REAL, ImageDecodeError, Sample
from .metrics import ECE_BINS, clean, rate
from .plots import plot_confusion, plot_reliability, plot_roc

if TYPE_CHECKING:
    from ..detector.scoring import Prediction


def _write_text(path: Path, text: str) -> None:
    # Write-then-rename: a crash never leaves a half-written file under the final name.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(rate: dict | None) -> str:
    """``[low-high%]`` of a :func:`~aigi.evaluation.metrics.rate` dict, for report cells."""
    if not rate or rate.get("ci95") is None:
        return "n/a"
    low, high = rate["ci95"]
    return f"{100 * low:.1f}–{100 * high:.1f}%"


def _ci_of(value: float | None, n: int) -> str:
    return "n/a" if value is None or not n else _ci(rate(round(value * n), n))


def _md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _rates_table(m: dict) -> list[str]:
    """Every headline rate with its 95% interval and the number of images behind it."""
    iv = m.get("intervals") or {}
    rows = [("accuracy", "accuracy", "scored images"), ("real_accuracy", "real accuracy (reals called real)", "reals"),
            ("fake_accuracy", "fake accuracy (fakes caught)", "fakes"),
            ("fpr", "false-positive rate (reals called AI-generated)", "reals")]
    lines = ["## Rates with 95% confidence intervals", "",
             "Wilson score intervals: how far each rate could move on another sample of the same size.", "",
             "| rate | value | 95% CI | images |", "|---|---:|---:|---:|"]
    for key, label, what in rows:
        r = iv.get(key)
        if r:
            lines.append(f"| {label} | {_pct(r['value'])} | {_ci(r)} | {r['n']} {what} |")
    notes = m.get("tpr_at_fpr_notes") or {}
    for t, r in (iv.get("tpr_at_fpr") or {}).items():
        label = f"fakes caught at {_pct(float(t))} FPR"
        if r:
            lines.append(f"| {label} | {_pct(r['value'])} | {_ci(r)} | {r['n']} fakes |")
        elif t in notes:
            lines.append(f"| {label} | undefined | | {_md(notes[t].removeprefix('undefined: '))} |")
    return lines + [""]


def _calibration_section(m: dict, note: str | None) -> list[str]:
    bins = m.get("reliability") or []
    lines = ["## Calibration", "",
             f"Expected calibration error (ECE, {ECE_BINS} equal-width bins of p_fake): {_num(m.get('ece'))}. "
             "A calibrated p_fake of 0.8 means that about 80% of such images are fakes.", ""]
    lines += [f"_{note}_" if note else "![Reliability diagram](reliability.png)", ""]
    if bins:
        lines += ["| p_fake bin | images | mean p_fake | fraction fake | 95% CI |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {b['low']:.2f}–{b['high']:.2f} | {b['n']} | {b['mean_p_fake']:.3f} | {b['fraction_fake']:.3f} "
                  f"| {_ci_of(b['fraction_fake'], b['n'])} |" for b in bins]
        lines.append("")
    return lines


def _markdown(metrics: dict, title: str, roc_note: str | None, cm_note: str | None, has_predictions: bool,
              reliability_note: str | None = None, worst_lines: list[str] | None = None) -> str:
    m = metrics
    lines = [f"# {title}", ""]
    if m.get("dataset"):
        lines += [f"Dataset: `{m['dataset']}`", ""]
    lines += [
        f"Threshold: p_fake >= {_num(m.get('threshold'), 3)} is called AI-generated.",
        "",
        "## Headline",
        "",
        # "unreadable files", not "errors": the count is of files that could not be read, not of
        # misclassified images (those are in the rates).
        "| accuracy | balanced acc. | real acc. | fake acc. | AUC | AP | ECE | images | unreadable files |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {_pct(m.get('accuracy'))} | {_pct(m.get('balanced_accuracy'))} | {_pct(m.get('real_accuracy'))} "
        f"| {_pct(m.get('fake_accuracy'))} | {_num(m.get('auc'))} | {_num(m.get('ap'))} | {_num(m.get('ece'))} "
        f"| {m.get('n_images', 0)} | {m.get('n_errors', 0)} |",
        "",
    ]
    tpr = {k: v for k, v in (m.get("tpr_at_fpr") or {}).items() if v is not None}
    if tpr:
        lines += [
            "Fakes caught at a fixed false-alarm rate on reals: "
            + ", ".join(f"{_pct(v)} at {_pct(float(k))} FPR" for k, v in tpr.items())
            + ".",
            "",
        ]
    for t, note in (m.get("tpr_at_fpr_notes") or {}).items():
        lines += [f"Fakes caught at {_pct(float(t))} FPR: {note}.", ""]
    lines += _rates_table(m)
    unc = m.get("uncertain")
    if unc:
        lines += ["## Uncertain band", "",
                  f"The model abstains (`uncertain`) for p_fake in [{unc['band'][0]:.3f}, {unc['band'][1]:.3f}] "
                  f"(chosen on its held-out data). Here {_pct(unc['in_band']['value'])} of the scored images "
                  f"({unc['in_band']['k']} of {unc['in_band']['n']}) fall in it; the verdicts outside it are "
                  f"{_pct(unc['accuracy_outside_band']['value'])} correct (95% CI {_ci(unc['accuracy_outside_band'])}, "
                  f"{unc['accuracy_outside_band']['n']} images). The rates above count every image at the threshold.",
                  ""]
    lines += _calibration_section(m, reliability_note)

    lines += ["## Per generator", "", "| source | images | detected as fake | 95% CI | mean p_fake |", "|---|---:|---:|---:|---:|"]
    for g, row in (m.get("per_generator") or {}).items():
        if g == REAL:
            continue
        lines.append(f"| {_md(g)} | {row['n']} | {_pct(row.get('recall'))} | {_ci_of(row.get('recall'), row['n'])} "
                     f"| {_num(row.get('mean_p_fake'), 3)} |")
    real = (m.get("per_generator") or {}).get(REAL)
    if real:
        lines.append(f"| real (false positives) | {real['n']} | {_pct(real.get('false_positive_rate'))} "
                     f"| {_ci_of(real.get('false_positive_rate'), real['n'])} | {_num(real.get('mean_p_fake'), 3)} |")
    lines.append("")

    att = m.get("attribution") or {}
    names, cm = att.get("labels") or [], att.get("confusion") or []
    lines += [
        "## Attribution",
        "",
        f"Which source the model names (source head, argmax), over {att.get('n', 0)} images whose source is one of its labels: "
        f"accuracy {_pct(att.get('accuracy'))} (95% CI {_ci_of(att.get('accuracy'), att.get('n', 0))}), "
        f"macro F1 {_num(att.get('macro_f1'))}.",
        "",
    ]
    if att.get("n_unseen_generator"):
        # Only the folder name is compared: the model may well know the generator under another name.
        unmatched = ", ".join(f"`{_md(g)}`" for g in att.get("unseen_generators") or [])
        known = ", ".join(f"`{_md(g)}`" for g in names[1:]) or "none"
        lines += [f"{att['n_unseen_generator']} images come from generator folders whose names are not among the "
                  f"model's generator names ({unmatched}); the model may know them under another name. They count "
                  f"in every rate above, but not here. The model's generator names: {known}.", ""]
    if names and cm:
        lines += ["| true source | images | correctly attributed | 95% CI | most often confused with |", "|---|---:|---:|---:|---|"]
        for i, name in enumerate(names):
            row = cm[i]
            total = sum(row)
            if not total:
                continue
            others = [(c, names[j]) for j, c in enumerate(row) if j != i and c]
            confused = f"{max(others)[1]} ({max(others)[0]})" if others else "-"
            lines.append(f"| {_md(name)} | {total} | {_pct(row[i] / total)} | {_ci(rate(row[i], total))} | {_md(confused)} |")
        lines.append("")

    lines += ["## Figures", ""]
    lines += [f"_{roc_note}_" if roc_note else "![ROC curve](roc.png)", ""]
    lines += [f"_{cm_note}_" if cm_note else "![Attribution confusion matrix](confusion.png)", ""]

    errors = m.get("errors") or []
    lines += ["## Unreadable files", ""]
    if not errors:
        lines += ["Every image was read.", ""]
    else:
        total = m.get("n_errors_total", m.get("n_errors", len(errors)))
        lines += [f"{total} file(s) could not be read" + (f" (first {len(errors)} listed)" if total > len(errors) else "") + ":", ""]
        lines += [f"- `{_md(e.get('path'))}`: {_md(e.get('reason'))}" for e in errors]
        lines.append("")
    lines += worst_lines or []
    files = "[metrics.json](metrics.json)" + (", [predictions.csv](predictions.csv)" if has_predictions else "")
    lines += ["---", "", f"Files: {files}.", ""]
    return "\n".join(lines)


def write_report(
    metrics: dict,
    out_dir: str | os.PathLike,
    predictions: Sequence["Prediction"] | None = None,
    title: str = "aigi evaluation",
    samples: Sequence[Sample] | None = None,
    worst: int = 4,
) -> Path:
    """Write ``metrics.json``, ``roc.png``, ``reliability.png``, ``confusion.png``,
    ``predictions.csv`` (when ``predictions`` are given) and ``report.md`` into ``out_dir``;
    with ``samples`` (one per prediction, as :func:`evaluate` returns them), also the ``worst``
    false positives and false negatives with their heatmaps (``worst/*.png``). Returns the
    report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cleaned = clean(metrics)
    # allow_nan=False: a NaN that slipped through is a bug to surface, not invalid JSON to ship.
    _write_text(out / "metrics.json", json.dumps(cleaned, indent=2, allow_nan=False) + "\n")

    roc_note = plot_roc(cleaned, out / "roc.png", title)
    if roc_note and (out / "roc.png").exists():
        (out / "roc.png").unlink()  # a stale curve from an earlier run would contradict the note
    reliability_note = plot_reliability(cleaned, out / "reliability.png", title)
    if reliability_note and (out / "reliability.png").exists():
        (out / "reliability.png").unlink()
    cm_note = plot_confusion(cleaned, out / "confusion.png", title)

    if predictions is not None:
        tmp = out / "predictions.tmp.csv"
        with ResultWriter(tmp) as writer:
            writer.write(predictions)
        os.replace(tmp, out / "predictions.csv")

    worst_lines = None
    if predictions is not None and samples is not None and worst > 0:
        worst_lines = _worst_mistakes(predictions, samples, cleaned.get("threshold", 0.5), out, worst)
    report = out / "report.md"
    _write_text(report, _markdown(cleaned, title, roc_note, cm_note, predictions is not None, reliability_note,
                                  worst_lines))
    return report


def worst_mistakes(predictions: Sequence["Prediction"], samples: Sequence[Sample], threshold: float,
                   n: int = 4) -> dict[str, list[tuple["Prediction", Sample]]]:
    """The ``n`` reals scored highest among those called AI-generated (false positives) and the
    ``n`` fakes scored lowest among those called real (false negatives), at ``threshold``."""
    pairs = [(p, s) for p, s in zip(predictions, samples) if p.p_fake is not None and s.label in (0, 1)]
    fp = sorted((x for x in pairs if x[1].label == 0 and x[0].p_fake >= threshold), key=lambda x: -x[0].p_fake)
    fn = sorted((x for x in pairs if x[1].label == 1 and x[0].p_fake < threshold), key=lambda x: x[0].p_fake)
    return {"false positives": fp[:n], "false negatives": fn[:n]}


def _worst_mistakes(predictions, samples, threshold: float, out: Path, n: int) -> list[str]:
    """The report's "Worst mistakes" section; heatmaps written to ``out/worst/``."""
    folder = out / "worst"
    for old in folder.glob("*.png") if folder.exists() else ():
        old.unlink()  # the mistakes of an earlier run would be mislabelled
    lines = ["## Worst mistakes", "",
             f"The {n} reals with the highest p_fake among those called AI-generated, and the {n} fakes with the "
             "lowest among those called real; each crop's p_fake is drawn over the image.", ""]
    for kind, items in worst_mistakes(predictions, samples, threshold, n).items():
        lines += [f"### {kind.capitalize()}", ""]
        if not items:
            lines += [f"None at threshold {threshold:.3f}.", ""]
            continue
        lines += ["| # | image | source | p_fake | heatmap |", "|---:|---|---|---:|---|"]
        for i, (pred, sample) in enumerate(items, 1):
            name = f"{kind.replace(' ', '-')[:-1]}-{i}.png"  # false-positive-1.png
            try:
                save_heatmap(decode_source(sample), pred, folder / name, threshold=threshold)
                cell = f"![{name}](worst/{name})"
            except ImageDecodeError as e:  # changed since it was scored
                cell = f"not drawn: {_md(e.reason)}"
            lines.append(f"| {i} | `{_md(pred.path)}` | {_md(sample.generator or 'real')} | {pred.p_fake:.3f} | {cell} |")
        lines.append("")
    return lines


__all__ = ["worst_mistakes", "write_report"]
