"""Sharp edges a new user met, each fixed: splits, export names, backbones, devices, threads, resume."""

from __future__ import annotations

import json
import os

import pytest

from aigi.cli.main import build_parser, main
from aigi.io.splits import resolve_splits, trained_on


@pytest.fixture
def data(tmp_path):
    from synthetic import make_dataset

    return make_dataset(tmp_path / "ds", n_per_class=20, size=40)


def _trained_on(model_dir, tmp_path, source: str):
    """A copy of the test model whose config says it was trained on ``source``."""
    import shutil

    copy = tmp_path / "trained"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["training"] = {"data": {"source": source}}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_split_rule(tmp_path, data):
    config = {"training": {"data": {"source": f"{data} + /elsewhere/other.zip"}}}
    assert trained_on(data, ["/x/ds"]) == "name" and trained_on(tmp_path, [str(data)]) is None
    (split, note), (split2, note2) = resolve_splits([str(data), str(tmp_path / "new")], config)
    assert split == "test" and "among the model's training data" in note
    assert split2 == "all" and "not among" in note2
    assert resolve_splits([str(data)], config, "val") == [("val", "")]
    assert resolve_splits([str(data)], None) == [("all", "")]  # no model (audit): all
    manifest = tmp_path / "train.csv"  # a training manifest naming dataset::member rows
    manifest.write_text(f"path,label\n{tmp_path / 'pack.zip'}::real/a.jpg,0\n")
    assert resolve_splits([str(tmp_path / "pack.zip")], {"training": {"data": {"source": str(manifest)}}})[0][0] == "test"
    # Training records the manifest's datasets, so the rule holds where the manifest is gone.
    from aigi.training.config import TrainConfig
    from aigi.training.loop import data_record

    record = data_record(TrainConfig(data=str(manifest)), type("Set", (), {"summary": lambda self: {}})())
    assert record["roots"] == [str(tmp_path / "pack.zip")]
    manifest.unlink()
    gone = {"training": {"data": {"source": str(manifest), **record}}}
    assert resolve_splits(["/somewhere/else/pack.zip"], gone)[0][0] == "test"  # matched by name


def test_eval_scores_all_of_unseen_data_and_the_test_split_of_training_data(model_dir, data, tmp_path, capsys):
    assert main(["eval", str(data), "--model", str(model_dir), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["n_images"] == 40
    assert "not among the model's training data, every image is scored" in capsys.readouterr().err
    trained = _trained_on(model_dir, tmp_path, str(data))
    assert main(["eval", str(data), "--model", str(trained), "--out", str(tmp_path / "b")]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["splits"] == {str(data): "test"} and metrics["n_images"] < 40
    err = capsys.readouterr().err
    assert "only its test split is scored" in err
    # detect follows the same rule, and says so.
    assert main(["detect", str(data), "--model", str(trained), "-q", "--out", str(tmp_path / "d.csv")]) == 0
    assert sum(1 for _ in open(tmp_path / "d.csv")) - 1 == metrics["n_images"]


def test_export_of_a_registered_name_does_not_hide_it(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "default"]) == 0
    assert (tmp_path / "default.onnx").is_file() and not (tmp_path / "default").exists()


def test_offline_hub_backbone_fails_in_one_line(data, tmp_path, monkeypatch):
    import transformers

    def offline(*a, **k):  # what transformers raises without the network and no cache
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(SystemExit) as e:
        main(["train", str(data), "--out", str(tmp_path / "m"), "-q"])
    message = str(e.value)
    assert "\n" not in message and "--backbone efficientnet-lite0" in message and "openai/clip-vit-base-patch32" in message


def test_cuda_without_cuda_says_so(model_dir, data, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for verb in (["detect", str(data)], ["eval", str(data), "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            main([*verb, "--model", str(model_dir), "--device", "cuda"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "CUDA is not available here" in err and err.count("\n") == 1


def test_help_lists_every_backbone_and_documents_verdicts(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens too
    for name in ("efficientnet-lite0", "cnn-small", "tiny-clip", "openai/clip-vit-base-patch32", "localdirectory"):
        assert name in text
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    text = capsys.readouterr().out
    assert "p_generator" in text and "uncertain band" in text and "--target-fpr" in text


def test_eval_sets_the_thread_policy_of_detect(model_dir, data, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    args = build_parser().parse_args(["eval", str(data), "--model", str(model_dir), "--out", str(tmp_path / "e")])
    from aigi.cli.common import prepare_threads

    assert prepare_threads(args) and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_finished_resumed_run_says_nothing_is_left(model_dir, data, tmp_path, capsys):
    out = str(tmp_path / "r.csv")
    assert main(["detect", str(data), "--model", str(model_dir), "--out", out]) == 0
    capsys.readouterr()
    assert main(["detect", str(data), "--model", str(model_dir), "--out", out]) == 0
    err = capsys.readouterr().err
    assert "nothing left to score: all 40 file(s) are already in" in err and "\n0 file(s)" not in err


# ----------------------------------------------------------------------------- issue 19: a new user's sharp edges


def _one_line_exit(capsys, argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of ``aigi ARGV`` that is expected to stop early."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def test_a_missing_file_among_several_gets_an_error_row_and_a_nonzero_exit(model_dir, tmp_path, capsys):
    from PIL import Image

    a, b, missing = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "missing.jpg"
    for f, colour in ((a, (200, 10, 10)), (b, (10, 10, 200))):
        Image.new("RGB", (48, 40), colour).save(f)
    for fmt in ("csv", "jsonl", "json"):
        out = tmp_path / f"r.{fmt}"
        assert main(["detect", str(a), str(missing), str(b), "--model", str(model_dir), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "3 file(s): 2 scored" in err and "1 unreadable" in err, err
        if fmt == "csv":
            import csv

            rows = list(csv.DictReader(out.open()))
        elif fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            rows = json.loads(out.read_text())
        assert [r["path"] for r in rows] == [str(a), str(missing), str(b)]  # in input order
        assert rows[1]["error"] and "not found" in rows[1]["error"] and not rows[0]["error"] and not rows[2]["error"]
    # The table says it too, and a run where every input was scored still exits 0.
    assert main(["detect", str(a), str(missing), "--model", str(model_dir)]) == 1
    out = capsys.readouterr().out
    assert "missing.jpg" in out and "error" in out
    assert main(["detect", str(a), str(b), "--model", str(model_dir), "-q"]) == 0


def test_bad_devices_and_model_names_stop_in_one_line_with_status_2(model_dir, data, capsys):
    import torch

    cases = [["--device", "gpu"], ["--model", "no-such-model"]]
    if not torch.cuda.is_available():
        cases.append(["--device", "cuda"])
    for verb in (["detect", str(data)], ["explain", str(next(data.rglob("*.png"))), "--out", "x.png"]):
        for extra in cases:
            argv = [*verb, "--model", str(model_dir), *extra]
            code, err = _one_line_exit(capsys, argv)
            assert code == 2, (argv, code)
            assert err.startswith("aigi") and err.count("\n") == 1 and "Traceback" not in err, err
            assert ("gpu" in err and "cuda" in err) if "gpu" in extra else True


def test_python_api_raises_clear_errors_for_bad_devices_and_names(model_dir):
    import torch

    from aigi.detector.devices import DeviceError, DeviceUnavailableError, UnknownDeviceError
    from aigi.detector.model import Detector
    from aigi.detector.registry import UnknownModelError

    with pytest.raises(UnknownDeviceError, match="unknown device 'gpu'") as e:
        Detector.from_pretrained(model_dir, device="gpu")
    assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
    with pytest.raises(UnknownModelError, match="not a registered name") as e:
        Detector.from_pretrained("no-such-model")
    assert isinstance(e.value, ValueError) and isinstance(e.value, FileNotFoundError)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available") as e:
            Detector.from_pretrained(model_dir, device="cuda")
        assert isinstance(e.value, DeviceError) and isinstance(e.value, RuntimeError)


@pytest.fixture(scope="module")
def two_scale_model(tmp_path_factory):
    """A tiny model that, like the bundled default, also scores a half-scale view (2 crops per scale)."""
    import torch

    from aigi.detector.model import Detector

    torch.manual_seed(0)
    model = Detector.from_backbone("tiny-clip", ["genA"], crops=2, scales=(1.0, 0.5))
    return model.save_pretrained(tmp_path_factory.mktemp("two-scale"))


def test_crops_n_is_the_number_of_crops_scored_in_all(two_scale_model, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "big.png"  # room for 4x4 native crops of 32 px and 2x2 half-scale ones
    Image.effect_noise((160, 128), 60).convert("RGB").save(image)
    out = tmp_path / "r.jsonl"
    assert main(["detect", str(image), "--model", str(two_scale_model), "--crops", "12", "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(row["crops"]) == 12
    assert sorted({c["scale"] for c in row["crops"]}) == [0.5, 1.0] and all(len(c["box"]) == 4 for c in row["crops"])
    capsys.readouterr()
    assert main(["explain", str(image), "--model", str(two_scale_model), "--crops", "12",
                 "--out", str(tmp_path / "heat.png")]) == 0
    err = capsys.readouterr().err
    assert "heatmap of 12 crop(s)" in err and "at half size" in err, err
    # Left out, the model's own number at each scale: 2 + 2, as before.
    assert main(["detect", str(image), "--model", str(two_scale_model), "--out", str(tmp_path / "d.jsonl")]) == 0
    assert len(json.loads((tmp_path / "d.jsonl").read_text())["crops"]) == 4
    code, err = _one_line_exit(capsys, ["detect", str(image), "--crops", "0"])
    assert code == 2 and "at least 1" in err


def _verbs(parser=None, prefix: str = "") -> dict:
    """Every verb's parser by name, nested ones (``synth aligned``) too."""
    import argparse

    parser = parser or build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_verbs(sub, f"{prefix}{name} "))
    return found


def test_every_option_of_every_verb_is_described():
    import argparse

    undescribed = []
    for name, verb in _verbs().items():
        for action in verb._actions:
            if isinstance(action, argparse._HelpAction) or isinstance(action, argparse._SubParsersAction):
                continue
            text = (action.help or "").replace("(default %(default)s)", "").strip()
            if len(text) < 8:
                undescribed.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not undescribed, f"options without a description: {undescribed}"


def test_help_names_only_options_the_verb_has(capsys):
    import re

    for name, verb in _verbs().items():
        if verb._subparsers is not None:
            continue  # a verb group (synth): its verbs are checked themselves
        own = {s for a in verb._actions for s in a.option_strings}
        text = verb.format_help()
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text))
        assert named <= own, f"aigi {name} --help names options it does not have: {sorted(named - own)}"


def test_models_verb_and_detect_help_list_the_registered_models(capsys):
    from aigi.detector.registry import registered_names

    names = registered_names()
    assert {"default", "univfd", "aigi-0.1-64px"} <= set(names)
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines if line.strip()}
    assert set(listed) == set(names)
    assert all(len(line.split()) > 5 for line in listed.values())  # one line on what it is and its weights
    assert "hub" in listed["univfd"] and "shipped" in listed["default"]
    text = " ".join(_verbs()["detect"].format_help().split())
    assert all(name in text for name in names) and "exit status" in text
