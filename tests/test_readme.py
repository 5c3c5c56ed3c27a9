"""The README as a new user follows it: the set-up, the example files and the examples that use them.

Its code blocks are read from README.md and run as written (in a folder laid out as a clone is,
with ``../shared`` beside it), so a step it forgets or an output it misstates fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic import SHARED_DATA

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README section whose heading starts with ``title``, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}.*?$(.*?)(?=^#+ )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def test_quick_start_makes_a_fresh_virtual_environment_first():
    text = section("Set up")
    venv, commands = blocks(text, "bash")[:2]
    assert "python3 -m venv .venv" in venv and ". .venv/bin/activate" in venv
    assert "fresh virtual environment" in " ".join(text.split())
    assert text.index(venv) < text.index(commands)
    assert commands.count("pip install torch==2.13.0") == 2 and "python -m pytest -q" in commands


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """A folder laid out as a clone (``../shared`` beside it) where the README's block that makes
    the example files has been run as written."""
    if not (SHARED_DATA / "real-photos-dev.zip").exists() or not (SHARED_DATA / "sd15-styles.zip").exists():
        pytest.skip(f"{SHARED_DATA} is absent: the README's examples need the shared datasets beside the checkout")
    root = tmp_path_factory.mktemp("clone")
    (root / "shared").symlink_to(SHARED_DATA.parent)
    repo = root / "repo"
    repo.mkdir()
    (make,) = blocks(section("Example files"), "bash")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", "-c", make], cwd=repo, env=env, check=True)
    return repo


def test_example_files_are_made_as_the_readme_says(example_folder):
    for name in ("photo.jpg", "painting.webp", "notes.jpg"):
        assert (example_folder / name).stat().st_size > 0
    assert b"\xff\xd8" == (example_folder / "photo.jpg").read_bytes()[:2]
    assert not (example_folder / "notes.jpg").read_bytes().startswith(b"\xff\xd8")  # a text file named like an image


def test_python_api_example_prints_what_the_readme_shows(example_folder):
    text = section("Python API")
    code = blocks(text, "python")[0]
    shown = blocks(text, "text")[0]
    run = subprocess.run([sys.executable, "-c", code], cwd=example_folder, capture_output=True, text=True, check=True)
    got, want = run.stdout.splitlines(), shown.splitlines()
    assert len(got) == len(want) == 3, run.stdout
    for g, w in zip(got, want):
        g_path, g_p, *g_rest = g.split(" ", 2)
        w_path, w_p, *w_rest = w.split(" ", 2)
        assert g_path == w_path and g_rest == w_rest, (g, w)
        assert g_p == w_p == "None" or float(g_p) == pytest.approx(float(w_p), abs=1e-4)
    assert "not found" not in run.stdout  # every file it names is there


def test_detect_example_exits_as_the_readme_shows(example_folder, monkeypatch, capsys):
    from aigi.cli.main import main

    example = blocks(section("`aigi detect`"), "console")[0]
    command, _, rest = example.partition("\n")
    status = re.search(r"^\$ echo \$\?\n(\d+)", rest, re.M)
    assert command.startswith("$ aigi detect ") and status
    monkeypatch.chdir(example_folder)
    assert main(command.split()[2:]) == int(status.group(1))
    out, err = capsys.readouterr()
    table = [line for line in rest.split("\n\n")[0].splitlines()]
    assert out.splitlines() == table
    assert err.strip().splitlines()[-2:] == rest.split("\n\n", 1)[1].splitlines()[:2]


def test_explain_section_says_what_the_default_draws():
    """The crops the README says the bundled default scores (and `aigi explain` draws) are the ones it scores."""
    import numpy as np
    from PIL import Image

    from aigi.detector.registry import resolve_model_path
    from aigi.io.inputs import load_input
    from aigi.io.preprocessing import Preprocessing

    import json

    config = json.loads((resolve_model_path("default") / "config.json").read_text())
    prep = Preprocessing.from_dict(config["preprocessing"])
    text = " ".join(section("`aigi explain`").split())

    def counts(w: int, h: int, crops: int | None = None) -> tuple[int, int]:
        im = Image.fromarray(np.zeros((h, w, 3), np.uint8))
        x = load_input(im, prep, crops=crops)
        return x.scales.count(1.0), x.scales.count(0.5)

    assert counts(1024, 768) == (2, 2) and "4 boxes on `aqueduct.jpg` (1024x768" in text
    assert counts(1024, 1024) == (2, 2) and "4 on `painting.webp` (1024x1024)" in text
    assert counts(512, 512) == (2, 1) and "3 on a 512 px image" in text
    assert counts(481, 321) == (2, 0) and "2 on `photo.jpg` (481x321)" in text
    assert counts(1024, 768, crops=12) == (8, 4) and "--crops 12` draws 8 native boxes and 4 half-size ones" in text
    assert "(the bundled default) shows one box" not in text
