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


def test_cuda_without_cuda_says_so(model_dir, data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for verb in (["detect", str(data)], ["eval", str(data), "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            main([*verb, "--model", str(model_dir), "--device", "cuda"])
        assert "CUDA is not available here" in str(e.value) and "\n" not in str(e.value)


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
