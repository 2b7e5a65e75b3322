"""More bad input, entry point by entry point: each ends with exactly one 'error:' line on stderr, exit code 2, no
traceback, and nothing written (no new folder, files byte-identical)."""

import json
import shutil

import cv2
import pytest
import torch

from evaluation import compare, report, visualize
from model import build_model
from tests.entry import test_entry, train_entry
from tests.helpers import opts_for
from tool_data import synthetic
from tool_train import nproc

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"


def only_line(err: str) -> str:
    """stderr is one 'error:' line and nothing else (no usage text, no progress bar, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def broken_label(tiny_data, tmp_path):
    """A copy of the tiny dataset whose last val label holds the value 7 (classes 5)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    label = root / (root / "list/val.txt").read_text().split()[-1]
    values = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    values[2, 2] = 7
    cv2.imwrite(str(label), values)
    return root


@pytest.mark.parametrize(
    "module,argv,needle",
    [
        (train_entry, [], "required: --config"),
        (test_entry, ["--config"], "--config: expected one argument"),
        (report, ["--defense", "none"], "required: --out"),
        (compare, [], "required: reference, ours"),
        (visualize, ["--config", CONFIG, "--out", "x.png", "--index", "x"], "invalid int value: 'x'"),
        (nproc, ["--config", "no/such.yaml"], "config file 'no/such.yaml' not found"),
        (synthetic, ["--seed", "x"], "invalid int value: 'x'"),
    ],
)
def test_a_usage_error_is_one_line(run_cli, module, argv, needle):
    code, out, err = run_cli(module, argv)
    assert code == 2 and needle in only_line(err) and not out


@pytest.mark.parametrize(
    "override,needle",
    [
        (["base_lr", ".nan"], "base_lr must be finite"),
        (["scales", "[1.0, .inf]"], "scales must be finite"),
        (["power", "-0.9"], "power must be >= 0"),
        (["momentum", "-1"], "momentum must be >= 0"),
        (["weight_decay", "-1e-4"], "weight_decay must be >= 0"),
        (["start_epoch", "-1"], "start_epoch must be >= 0"),
        (["aux_weight", "-0.4"], "aux_weight must be >= 0"),
        (["world_size", "0"], "world_size must be >= 1"),
        (["defense", "sat", "adv_eps", "8"], "adv_eps must be <= 1 under linf"),
        (["background_class", "5"], "background_class must be a class in [0, 4]"),
        (["classes", "0"], "classes must be >= 2"),
    ],
)
def test_config_values_that_would_train_or_score_wrongly_are_refused(run_cli, tiny_opts, tmp_path, override, needle):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, *override])
    assert code == 2 and needle in only_line(err)
    assert not (tmp_path / "model").exists()


def test_a_bad_label_is_refused_before_training_or_evaluation_writes(run_cli, tiny_opts, broken_label, tmp_path):
    """The label is checked before the run starts, not when an epoch or the evaluation reaches it."""
    opts = opts_for(tiny_opts, broken_label)
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts, "evaluate", "True"])
    assert code == 2 and "has values 7 outside 0..4" in only_line(err)
    assert not (tmp_path / "model").exists()
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, tmp_path / "m.pth")
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *opts, "model_path", str(tmp_path / "m.pth")])
    assert code == 2 and "has values 7 outside 0..4" in only_line(err)
    assert not (tmp_path / "result").exists()


def test_a_checkpoint_that_does_not_load_leaves_no_save_folder(run_cli, tiny_opts, tmp_path):
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:1000])
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "cut.pth")])
    assert code == 2 and "is not a loadable torch checkpoint" in only_line(err)
    code, _, err = run_cli(
        test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "whole.pth"), "layers", "34"]
    )
    assert code == 2 and "does not fit" in only_line(err)
    assert not (tmp_path / "result").exists()


def test_has_prediction_without_predictions_is_refused_before_writing(run_cli, tiny_opts, tmp_path):
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "has_prediction", "True"])
    assert code == 2 and "has_prediction is True, but" in only_line(err) and "has_prediction False" in err
    assert not (tmp_path / "result").exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--out", "picture"], "must name a .png file"),
        (["--out", "x.png", "--scale", "0"], "--scale must be >= 1"),
    ],
)
def test_visualize_checks_its_arguments_before_the_model(run_cli, tiny_opts, tmp_path, extra, needle):
    code, _, err = run_cli(visualize, ["--config", CONFIG, *extra, *tiny_opts])
    assert code == 2 and needle in only_line(err)


def test_visualize_checks_the_label(run_cli, tiny_opts, broken_label, tmp_path):
    code, _, err = run_cli(
        visualize,
        ["--config", CONFIG, "--out", str(tmp_path / "p.png"), "--index", "3", *opts_for(tiny_opts, broken_label)],
    )
    assert code == 2 and "has values 7 outside 0..4" in only_line(err)
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("content", [[1, 2], {"mode": "clean"}])
def test_compare_and_report_refuse_a_results_json_of_another_shape(run_cli, tmp_path, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/results.json").write_text(json.dumps(content))
    code, _, err = run_cli(compare, [str(tmp_path / "run"), str(tmp_path / "run")])
    assert code == 2 and "is not a test.py results.json" in only_line(err)
    code, _, err = run_cli(report, [str(tmp_path / "run"), "--defense", "none", "--out", str(tmp_path / "r.json")])
    assert code == 2 and "is not a test.py results.json" in only_line(err)
    assert not (tmp_path / "r.json").exists()


def test_report_refuses_a_foreign_out_or_curve_before_writing(run_cli, tmp_path):
    run = tmp_path / "run"
    for folder in (run, run / "bim"):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"mIoU": 0.5, "mAcc": 0.6, "allAcc": 0.9}))
    (tmp_path / "other.json").write_text('{"x": 1}')
    code, _, err = run_cli(report, [str(run), "--defense", "none", "--out", str(tmp_path / "other.json")])
    assert code == 2 and "is not this command's JSON" in only_line(err)
    assert (tmp_path / "other.json").read_text() == '{"x": 1}'
    code, _, err = run_cli(report, [str(run), "--defense", "none", "--out", str(tmp_path)])
    assert code == 2 and "is a folder" in only_line(err)
    code, _, err = run_cli(
        report, [str(run), "--defense", "none", "--out", str(tmp_path / "r.json"), "--curve", str(tmp_path / "c.txt")]
    )
    assert code == 2 and "must name a .png file" in only_line(err)
    assert not (tmp_path / "r.json").exists()


def test_synthetic_refuses_a_size_that_does_not_fit_in_memory(run_cli, tmp_path):
    code, _, err = run_cli(synthetic, ["--root", str(tmp_path / "s"), "--size", "100000"])
    assert code == 2 and "--size must be in [32, 2048]" in only_line(err)
    assert not (tmp_path / "s").exists()


def test_synthetic_refuses_a_folder_of_other_files(run_cli, tmp_path):
    root = tmp_path / "mine"
    (root / "image" / "train").mkdir(parents=True)
    (root / "image" / "train" / "00000.png").write_bytes(b"someone's image")
    code, _, err = run_cli(synthetic, ["--root", str(root), "--num-train", "1", "--num-val", "1"])
    assert code == 2 and err.count("\n") == 1 and "not empty and holds no synthetic dataset" in err
    assert sorted(p.name for p in root.rglob("*")) == ["00000.png", "image", "train"]
    assert (root / "image" / "train" / "00000.png").read_bytes() == b"someone's image"
