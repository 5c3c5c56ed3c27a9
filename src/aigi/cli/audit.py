"""``aigi audit``: can file properties alone tell a dataset's real images from its fakes?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.splits import AUTO, SPLIT_CHOICES


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from ..forensics.audit import audit_dataset, format_audit
    from ..io.datasets import load_datasets

    try:
        dataset = load_datasets(args.data, "all" if args.split == AUTO else args.split)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"aigi audit: {e}")
    report = audit_dataset(dataset, max_images=args.max_images, seed=args.seed)
    text = format_audit(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "audit.md").write_text(text + "\n", encoding="utf-8")
        print(f"audit: {out / 'audit.md'}, {out / 'audit.json'}", file=sys.stderr)
    if report["warning"]:
        print(f"aigi audit: {report['warning']}", file=sys.stderr)
    return 0


def add_parser(verbs) -> None:
    p = verbs.add_parser("audit", help="check a dataset for format shortcuts",
                         description="Per class and source: formats, sizes, JPEG quality, chroma subsampling and "
                                     "metadata; then whether these file properties alone separate real from fake.")
    p.add_argument("data", nargs="+", help="folder or .zip with real/ and fake/<generator>/, or a CSV manifest (several: audited together)")
    p.add_argument("--split", default=AUTO, choices=SPLIT_CHOICES,
                   help="public split to audit; auto is all here, as no model is involved (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="audit a fixed random sample of N images (big datasets)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the classifier (default %(default)s)")
    p.add_argument("--out", help="directory for audit.json and audit.md")
    p.set_defaults(func=cmd_audit)


__all__ = ["add_parser", "cmd_audit"]
