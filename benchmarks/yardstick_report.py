"""The yardstick's section of BENCHMARKS.md, from ``benchmarks/results/yardstick.json``."""

from __future__ import annotations

from .harness import row, table

HEADLINE = "default"  # the recipe whose per-source table is shown (falls back to the first measured)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(m: dict, key: str) -> str:
    ci = m.get(key + "_ci")
    return f"{_f(m.get(key))} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else _f(m.get(key))


def _summary(rec: dict, split: str, pert: str) -> dict:
    return ((rec.get("sets") or {}).get(split) or {}).get(pert, {}).get("summary", {})


def render(results: dict, perturbations: tuple[str, ...]) -> str:
    recipes = results.get("recipes") or {}
    if not recipes:
        return "## Cross-source yardstick\n\nNo results yet: `python -m benchmarks.yardstick run`.\n"
    counts = results.get("counts") or {}
    first = next(iter(recipes.values()))
    lines = [
        "## Cross-source yardstick", "",
        "Made by `aigi data build` then `python -m benchmarks.yardstick run` (report: `python -m benchmarks.yardstick "
        f"report`) on {first.get('machine', '?')}, {first.get('date', '?')}; raw figures in "
        "`benchmarks/results/yardstick.json`. Whole *sources* (a repository or archive and its pipeline; "
        "`src/aigi/io/sources.toml`) are held out, both classes: each recipe trains on the train sources, is "
        "calibrated on the val sources, and is scored here on the test sources, which nothing of its training or "
        "selection saw. Every figure is the **mean over held-out sources** (a source of 12 photos weighs as much as "
        "one of 500); a camera source is judged by its photos against all held-out generator images, a generator "
        "source by its images against all held-out photos. ECE: every source weighing the same, classes equal.",
        "",
        "Held out: " + "; ".join(f"{split} {c['images']:,} images from {c['sources']} source-classes"
                                 for split, c in counts.items() if split != "train")
        + (f"; trained on {counts['train']['images']:,} images from {counts['train']['sources']} source-classes."
           if "train" in counts else "."),
        "", "### Test sources (never seen), clean", "",
        *table(["recipe", "AUC", "TPR at 1% FPR", "TPR at 5% FPR", "real FPR at its threshold",
                "fake recall at its threshold", "ECE", "in-source AUC (flatters)", "val AUC"], "l" + "r" * 8),
    ]
    for name, rec in recipes.items():
        s, ins, val = _summary(rec, "test", "none"), _summary(rec, "in-source", "none"), _summary(rec, "val", "none")
        lines.append(row([f"**{name}**" if name == HEADLINE else name, _f(s.get("auc")), _f(s.get("tpr_at_1fpr")),
                          _f(s.get("tpr_at_5fpr")), _f(s.get("real_fpr")), _f(s.get("fake_recall")),
                          _f(s.get("ece_balanced")), _f(ins.get("auc")), _f(val.get("auc"))]))
    others = [p for p in perturbations if p != "none"]
    lines += ["", "### Test sources under perturbation (AUC / TPR at 5% FPR, mean over sources)", "",
              *table(["recipe", *others, "train (s)", "score test, clean (s)"], "l" + "r" * (len(others) + 2))]
    for name, rec in recipes.items():
        cells = []
        for p in others:
            s = _summary(rec, "test", p)
            cells.append(f"{_f(s.get('auc'))} / {_f(s.get('tpr_at_5fpr'))}" if s else "not measured")
        lines.append(row([name, *cells, f"{rec.get('train_s', 0):,.0f}", _f(_summary(rec, "test", "none").get("score_s"))]))
    lines += ["", "### What each recipe is", ""]
    lines += [f"- **{name}**: {rec['what']}" for name, rec in recipes.items()]
    shown = HEADLINE if HEADLINE in recipes else next(iter(recipes))
    units = (((recipes[shown].get("sets") or {}).get("test") or {}).get("none") or {}).get("units") or {}
    if units:
        lines += ["", f"### Per test source: {shown} (95% intervals)", "",
                  *table(["source", "class", "images", "AUC", "TPR at 5% FPR", "flagged at the threshold"], "llrrrr")]
        for unit, m in sorted(units.items(), key=lambda kv: (kv[1]["class"], kv[0])):
            flagged = _ci(m, "real_fpr" if m["class"] == "real" else "fake_recall")
            lines.append(row([unit.rsplit(":", 1)[0], m["class"], m["n"], _ci(m, "auc"), _ci(m, "tpr_at_5fpr"), flagged]))
    lines.append("")
    return "\n".join(lines)


__all__ = ["render"]
