"""aigi synth aligned: pairs with the same names, sizes and encoding, one split per pair, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigi.cli.main import main
from aigi.encoders.autoencoders import zoo_dir
from aigi.io.datasets import load_dataset
from aigi.io.samples import pair_key


@pytest.fixture
def reals(tmp_path) -> Path:
    if not (zoo_dir() / "taesd_encoder.safetensors").exists():
        pytest.skip(f"{zoo_dir()} is absent: synth needs ../shared/zoo/tiny-autoencoders")
    root = tmp_path / "photos"
    (root / "real" / "cam").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = rng.integers(0, 256, (50 + 8 * i, 70, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i % 2:
            im.save(root / "real" / "cam" / f"p{i}.jpg", quality=91, subsampling=2)
        else:
            im.save(root / "real" / "cam" / f"p{i}.png")
    (root / "real" / "cam" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def test_synth_aligned_end_to_end(reals, tmp_path, capsys):
    out = tmp_path / "aligned"
    assert main(["synth", "aligned", str(reals), "--autoencoder", "taesd", "taef2", "--out", str(out), "-q",
                 "--max-side", "48"]) == 0
    err = capsys.readouterr().err
    assert "6 real image(s) written" in err and "1 unreadable" in err and "broken.jpg" in err
    for real in sorted((out / "real").rglob("*.*")):
        rel = real.relative_to(out / "real")
        with Image.open(real) as r:
            for ae in ("taesd", "taef2"):
                with Image.open(out / "fake" / ae / rel) as f:
                    assert f.size == r.size and f.format == r.format
                    assert max(f.size) <= 48 and f.size[0] % 8 == 0 and f.size[1] % 8 == 0
                    if r.format == "JPEG":
                        assert f.quantization == r.quantization
                        assert f.layer == r.layer  # same chroma subsampling
                    assert not f.info.get("exif") and not r.info.get("exif")
    original = Image.open(reals / "real" / "cam" / "p1.jpg")
    assert original.quantization == Image.open(out / "real" / "cam" / "p1.jpg").quantization  # the real's own quality
    data = load_dataset(out)
    assert data.summary()["per_source"] == {"real": 6, "taesd": 6, "taef2": 6}
    by_pair = {}
    for s in data.samples:
        by_pair.setdefault(pair_key(s.relpath), set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_pair.values())  # a pair never straddles splits


def test_synth_aligned_resumes(reals, tmp_path, capsys):
    out = tmp_path / "aligned"
    args = ["synth", "aligned", str(reals), "--autoencoder", "taesd", "--out", str(out), "--max-side", "32", "-q"]
    assert main(args) == 0
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix != ".json"}
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "0 real image(s) written" in err and "6 already done" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.suffix != ".json"} == stamp


def test_manifest_rows_name_members_of_a_paired_folder(reals, tmp_path):
    """``dataset::member`` rows keep the paired split rule: an aligned fake goes where its real goes."""
    out = tmp_path / "aligned"
    assert main(["synth", "aligned", str(reals), "--autoencoder", "taesd", "--out", str(out), "--max-side", "32", "-q"]) == 0
    members = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*") if p.suffix != ".json")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,generator\n" + "".join(
        f"{out}::{m},{0 if m.startswith('real/') else 1},{'real' if m.startswith('real/') else 'taesd'}\n" for m in members))
    samples = load_dataset(manifest).samples
    assert len(samples) == 12 and all(s.paired and Path(s.path).is_file() for s in samples)
    assert {pair_key(s.relpath) for s in samples} == {m for m in members if m.startswith("real/")}
    for s in samples:
        assert s.split == next(r.split for r in samples if r.relpath == pair_key(s.relpath))
