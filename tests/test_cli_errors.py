"""Bad input ends train.py / test.py with one clear line on stderr and exit code 2."""

import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from model import build_model
from tests.conftest import ROOT
from tests.entry import test_entry, train_entry
from tests.helpers import opts_for

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny dataset that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def one_line(err: str) -> str:
    """The run ends with exactly one 'error:' line and no traceback (a progress bar may precede it)."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


def first_label(root, split="train"):
    return root / (root / f"list/{split}.txt").read_text().splitlines()[0].split()[1]


def first_image(root, split="train"):
    return root / (root / f"list/{split}.txt").read_text().splitlines()[0].split()[0]


def test_missing_list_file(run_cli, tiny_opts, data):
    (data / "list/train.txt").unlink()
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts_for(tiny_opts, data)])
    assert code == 2 and "train.txt" in one_line(err) and "not found" in err


def test_malformed_list_line_names_the_line(run_cli, tiny_opts, data):
    path = data / "list/train.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2] + " extra"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts_for(tiny_opts, data)])
    assert code == 2 and "line 3" in one_line(err)


def test_missing_image(run_cli, tiny_opts, data):
    first_image(data).unlink()
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts_for(tiny_opts, data)])
    assert code == 2 and "line 1" in one_line(err) and "00000.png" in err


def test_missing_label_in_test(run_cli, tiny_opts, data):
    first_label(data, "val").unlink()
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *opts_for(tiny_opts, data)])
    assert code == 2 and "00000.png" in one_line(err)


def test_size_mismatch(run_cli, tiny_opts, data):
    label = first_label(data)
    cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts_for(tiny_opts, data), "epochs", "1"])
    assert code == 2 and str(label.name) in one_line(err)


def test_label_out_of_range_through_a_worker(run_cli, tiny_opts, data):
    label = first_label(data)
    values = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    values[0, 0] = 7
    cv2.imwrite(str(label), values)
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *opts_for(tiny_opts, data), "workers", "1"])
    line = one_line(err)
    assert code == 2 and "7" in line and "classes" in line and "Traceback" not in line


def test_corrupt_image(run_cli, tiny_opts, data):
    first_image(data, "val").write_bytes(b"\x89PNG not really")
    code, _, err = run_cli(
        test_entry, ["--config", CONFIG, *opts_for(tiny_opts, data), "model_path", str(checkpoint(data, 5))]
    )
    assert code == 2 and "00000.png" in one_line(err)


def test_unknown_key_and_wrong_type(run_cli, tiny_opts):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "base_lrr", "0.1"])
    assert code == 2 and "did you mean 'base_lr'" in one_line(err)
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "test_h", "big"])
    assert code == 2 and "'test_h' expects int" in one_line(err)


def checkpoint(tmp, classes):
    path = tmp / f"model_{classes}.pth"
    torch.save({"epoch": 1, "state_dict": build_model("psp", 18, classes).state_dict()}, path)
    return path


def test_checkpoint_missing_or_not_fitting(run_cli, tiny_opts, tmp_path):
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "no.pth")])
    assert code == 2 and "no.pth' not found" in one_line(err)
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(checkpoint(tmp_path, 3))])
    line = one_line(err)
    assert code == 2 and "does not fit" in line and "cls.4.weight" in line
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "weight", str(checkpoint(tmp_path, 3))])
    assert code == 2 and "cls.4.weight" in one_line(err)


def test_explicit_cuda_without_cuda(run_cli, tiny_opts):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "device", "cuda"])
    assert code == 2 and "no CUDA" in one_line(err)


def test_attack_on_unlabelled_split(run_cli, tiny_opts):
    code, _, err = run_cli(test_entry, ["--config", CONFIG, "--attack", *tiny_opts, "split", "test"])
    assert code == 2 and "needs labels" in one_line(err)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--protocol", "pirats"], "unknown evaluation protocol 'pirats'; known: ddcat, ours, pirat, samat"),
        (["--protocol", "ddcat", "--attack"], "with --protocol give one of the two"),
    ],
)
def test_an_unknown_or_doubled_protocol_is_one_line(run_cli, tiny_opts, tmp_path, extra, needle):
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *extra, *tiny_opts, "save_folder", str(tmp_path / "r")])
    assert code == 2 and needle in one_line(err) and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        (["adv_eps", "-0.03"], "adv_eps > 0"),
        (["adv_step_size", "0"], "adv_step_size must be > 0"),
        (["defense", "madry"], "defense must be one of ['none', 'ddcat', 'pgd_at', 'sat', 'trades'], got 'madry'"),
        (["trades_beta", "-1"], "trades_beta must be >= 0"),
        (["adv_clean_fraction", "1"], "adv_clean_fraction must be in [0, 1)"),
        (["adv_norm", "l3"], "adv_norm must be one of ['linf', 'l2']"),
        (["optimizer", "sgdd"], "optimizer must be one of ['sgd', 'adam', 'adamw', 'sam']"),
        (["sam_rho", "0"], "sam_rho > 0"),
    ],
)
def test_bad_defense_and_optimizer_settings(run_cli, tiny_opts, tmp_path, override, needle):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, *override])
    assert code == 2 and needle in one_line(err)
    assert not (tmp_path / "model").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "key,value,choices",
    [
        ("arch", "pspnet", "['psp', 'aspp', 'deeplabv3plus']"),
        ("backbone", "vgg", "'resnet'"),
        ("model", "deeplabv3_resnet18", "'deeplabv3_resnet50', 'deeplabv3plus_resnet50'"),
    ],
)
@pytest.mark.parametrize("given_in", ["config file", "command line"])
@pytest.mark.parametrize("entry", [train_entry, test_entry], ids=["train", "test"])
def test_a_bad_model_name_is_one_line_before_anything_is_written(
    run_cli, tiny_opts, tmp_path, entry, given_in, key, value, choices
):
    config = CONFIG
    override = [key, value]
    if given_in == "config file":
        config = tmp_path / "bad.yaml"
        given = f"{key}: {value}" if key == "arch" else f"arch: psp\n  {key}: {value}"
        config.write_text((ROOT / CONFIG).read_text().replace("arch: psp", given))
        override = []
    code, out, err = run_cli(entry, ["--config", str(config), *tiny_opts, *override])
    line = one_line(err)
    assert not out, "the names are checked before the run starts (nothing logged, nothing read or written)"
    assert code == 2 and f"{key} must be one of [" in line and choices in line and f"got '{value}'" in line, line
    assert not (tmp_path / "model").exists() and not (tmp_path / "result").exists()


def test_export_refuses_to_overwrite(run_cli, tmp_path):
    from model import export

    src, dst = tmp_path / "ddcat.pth", tmp_path / "deploy.pth"
    torch.save({"state_dict": build_model("psp", 18, 3, ddcat=True).state_dict()}, src)
    dst.write_bytes(b"keep me")
    code, _, err = run_cli(export, [str(src), str(dst)])
    assert code == 2 and "already exists" in one_line(err) and dst.read_bytes() == b"keep me"
    code, _, err = run_cli(export, [str(tmp_path / "absent.pth"), str(tmp_path / "new.pth")])
    assert code == 2 and "not found" in one_line(err) and not (tmp_path / "new.pth").exists()


@pytest.mark.parametrize(
    "attacks,needle",
    [
        ("[{name: deepfoool, eps: 8}]", "unknown attack 'deepfoool'"),
        ("[{name: fgsm, eps: 8, steps: 3}]", "fgsm has no field 'steps'"),
        ("[{name: pgd, eps: -1}]", "eps must be numbers >= 0"),
        ("[{name: pgd, eps: 8, norm: l1}]", "norm must be 'linf' or 'l2'"),
        ("[8]", "expected a mapping"),
    ],
)
def test_bad_attack_specs(run_cli, tiny_opts, tmp_path, attacks, needle):
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, tmp_path / "m.pth")
    code, _, err = run_cli(
        test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "m.pth"), "attacks", attacks]
    )
    assert code == 2 and needle in one_line(err)


def test_truncated_or_foreign_checkpoint(run_cli, tiny_opts, tmp_path):
    whole = checkpoint(tmp_path, 5).read_bytes()
    import argparse

    torch.save({"state_dict": {}, "args": argparse.Namespace(arch="psp")}, tmp_path / "pickled.pth")  # long torch text
    pickled = (tmp_path / "pickled.pth").read_bytes()
    for name, content in (
        ("truncated.pth", whole[: len(whole) // 2]),
        ("notes.pth", b"not a checkpoint\n"),
        ("pickled.pth", pickled),
    ):
        (tmp_path / name).write_bytes(content)
        code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / name)])
        assert code == 2 and f"{name}' is not a loadable torch checkpoint" in one_line(err)
        assert len(one_line(err)) - len(str(tmp_path)) <= 300, one_line(err)
    torch.save({"epoch": 1, "state_dict": [1, 2]}, tmp_path / "list.pth")
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "list.pth")])
    assert code == 2 and "holds no state dict of tensors" in one_line(err)


def test_non_finite_loss_names_the_iteration_and_keeps_the_last_checkpoint(run_cli, tiny_opts, tmp_path):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "base_lr", "1e12", "save_every_iters", "1"])
    line = one_line(err)
    assert code == 2 and re.search(r"loss became (nan|inf) at iteration (\d+)", line), line
    failed = int(re.search(r"at iteration (\d+)", line).group(1))
    assert failed > 1
    latest = (tmp_path / "model/latest").read_text().strip()
    assert latest == f"train_iter_{failed - 1}.pth"
    assert torch.load(tmp_path / "model" / latest, weights_only=True)["iteration"] == failed - 1


def test_gpu_lists_are_hints(monkeypatch, caplog):
    """An original config's train_gpu [0, 1, 2, 3] runs on the CPU without CUDA and on the GPUs present with
    fewer, each with one notice line."""
    from util.device import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO"):
        assert select_device("auto", [0, 1, 2, 3]) == torch.device("cpu")
    assert "no CUDA device: running on the CPU" in caplog.text
    caplog.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with caplog.at_level("INFO"):
        assert select_device("auto", [0, 1, 2, 3]) == torch.device("cuda", 0)
    assert "lists 4 GPUs, this machine has 2: using those present" in caplog.text


def test_resuming_another_runs_optimizer_is_one_line_before_anything_is_written(run_cli, tiny_opts, tmp_path):
    """A checkpoint of a plain run resumed as DDC-AT (other head parameter groups): one line, no traceback, and
    the new save_path is not even created."""
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "epochs", "1"])
    assert code == 0, err
    other = tmp_path / "ddcat"
    code, _, err = run_cli(
        train_entry,
        [
            "--config",
            "config/synthetic/synthetic_pspnet18_ddcat.yaml",
            *tiny_opts,
            "resume",
            str(tmp_path / "model/train_epoch_1.pth"),
            "save_path",
            str(other),
        ],
    )
    assert code == 2 and "holds the optimizer of another run" in one_line(err)
    assert not other.exists()


def test_an_output_folder_below_a_file_is_one_line(run_cli, tiny_opts, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "save_path", str(tmp_path / "file/model")])
    assert code == 2 and "save_path" in one_line(err) and "cannot be created" in one_line(err)
    code, _, err = run_cli(
        test_entry,
        [
            "--config",
            CONFIG,
            *tiny_opts,
            "model_path",
            str(tmp_path / "file"),
            "save_folder",
            str(tmp_path / "file/result"),
        ],
    )
    assert code == 2 and "save_folder" in one_line(err) and "cannot be created" in one_line(err)
    assert (tmp_path / "file").read_text() == "x"


def test_two_images_with_one_file_name_are_refused_before_evaluation(run_cli, tiny_opts, data, tmp_path):
    """Predictions are stored by file name: a list naming two images 'x' in different folders would score one
    prediction against both labels. Refused up front, naming both."""
    lines = (data / "list/val.txt").read_text().splitlines()
    image, label = lines[0].split()
    (data / "copy").mkdir()
    shutil.copy(data / image, data / "copy" / image.split("/")[-1])
    (data / "list/val.txt").write_text("\n".join([*lines, f"copy/{image.split('/')[-1]} {label}"]) + "\n")
    code, _, err = run_cli(
        test_entry, ["--config", CONFIG, *opts_for(tiny_opts, data), "model_path", str(tmp_path / "none.pth")]
    )
    line = one_line(err)
    assert code == 2 and "holds two images named" in line and "copy/" in line
    assert not (tmp_path / "result").exists()


def _lock(folder, pid):
    import json
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "since": "earlier"}))
    return (folder / ".lock").read_bytes()


def test_a_second_run_on_a_folder_in_use_is_refused_and_a_dead_runs_lock_taken_over(run_cli, tiny_opts, tmp_path):
    import os
    import subprocess

    held = _lock(tmp_path / "model", os.getpid())  # a live process holds save_path
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "epochs", "1"])
    assert code == 2 and f"is in use by another run (pid {os.getpid()} on" in one_line(err)
    assert (tmp_path / "model/.lock").read_bytes() == held and not list((tmp_path / "model").glob("*.pth"))
    _lock(tmp_path / "result", os.getpid())
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, tmp_path / "m.pth")
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "m.pth")])
    assert code == 2 and "save_folder" in one_line(err) and "is in use by another run" in one_line(err)
    gone = subprocess.Popen(["true"])
    gone.wait()
    _lock(tmp_path / "model", gone.pid)  # a run that crashed: its pid is gone
    code, out, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "epochs", "1"])
    assert code == 0, err
    assert "is gone; taking the folder over" in out and not (tmp_path / "model/.lock").exists()


def test_a_job_submitted_twice_on_one_save_path_is_refused_not_raced(run_cli, tiny_opts, tmp_path, monkeypatch):
    """The race of two train.py on one save_path, forced in-process: while one run reads the folder for other runs'
    checkpoints, the other runs from start to end. Reading under the lock, one of them is refused; reading before
    taking it, both exited 0 and the later one overwrote the other's checkpoints."""
    argv = ["--config", CONFIG, *tiny_opts, "epochs", "1"]
    real, runs, codes = train_entry.stale_checkpoints, [], []

    def while_reading(*args, **kwargs):
        found = real(*args, **kwargs)  # the folder as this run sees it
        if not runs:
            runs.append("second")
            codes.append(run_cli(train_entry, argv)[::2])  # the same job, submitted again, runs now
        return found

    monkeypatch.setattr(train_entry, "stale_checkpoints", while_reading)
    code, _, err = run_cli(train_entry, argv)
    ((other, other_err),) = codes
    assert code == 0, err
    assert other == 2 and "is in use by another run" in one_line(other_err)
    assert sorted(p.name for p in (tmp_path / "model").glob("*.pth")) == ["train_epoch_1.pth"]
    assert not (tmp_path / "model/.lock").exists()


def test_an_evaluation_submitted_twice_on_one_save_folder_is_refused_not_raced(
    run_cli, tiny_opts, tmp_path, monkeypatch
):
    """test.py's half of the race: while one run checks save_folder's stored predictions, the same evaluation runs
    from start to end. Checking under the lock, the second is refused and the first's results stand; checking
    before taking it, both exited 0 and the two wrote into one folder."""
    from evaluation import suite

    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, tmp_path / "m.pth")
    argv = ["--config", CONFIG, *tiny_opts, "model_path", str(tmp_path / "m.pth")]
    real, codes = suite.check_before_writing, []

    def while_checking(*args, **kwargs):
        real(*args, **kwargs)  # the folder as this run sees it
        if not codes:
            codes.append(None)
            codes[0] = run_cli(test_entry, argv)[::2]  # the same evaluation, submitted again, runs now

    monkeypatch.setattr(suite, "check_before_writing", while_checking)
    code, _, err = run_cli(test_entry, argv)
    ((other, other_err),) = codes
    assert code == 0, err
    assert other == 2 and "save_folder" in one_line(other_err) and "is in use by another run" in one_line(other_err)
    assert len(list((tmp_path / "result/gray").glob("*.png"))) == 4
    assert not (tmp_path / "result/.lock").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        (["std", "[0.2, 0, 0.2]"], "mean and std are three values each (RGB, in [0, 1] units) and std > 0"),
        (["mean", "[0.5, 0.5]"], "mean and std are three values each (RGB, in [0, 1] units) and std > 0"),
        (["model", "upernet_convnext_t_cvst"], "starts from a revisiting-at ImageNet file given as init_path"),
        (
            ["model", "upernet_convnext_t_cvst", "pretrained", "False", "separable_conv", "True"],
            "separable_conv is VainF's DeepLabV3+ option",
        ),
        (["pretrained", "False", "warmup_epochs", "2"], "leaves no iteration of the 8 for the poly schedule"),
    ],
)
def test_a_bad_normalisation_or_upernet_option_is_one_line_before_anything_is_written(
    run_cli, tiny_opts, tmp_path, override, needle
):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "pretrained", "True", *override])
    assert code == 2 and needle in one_line(err), err
    assert not (tmp_path / "model").exists()


def test_a_transfer_source_with_another_normalisation_is_refused_before_anything_is_written(
    run_cli, tiny_opts, tmp_path
):
    checkpoint = tmp_path / "random.pth"
    torch.save({"state_dict": build_model("psp", 18, 5, pretrained=False).state_dict()}, checkpoint)
    source = tmp_path / "raw_pixels.yaml"
    source.write_text((ROOT / CONFIG).read_text().replace("DATA:\n", "DATA:\n  mean: [0, 0, 0]\n  std: [1, 1, 1]\n", 1))
    attacks = f"[{{name: bim, eps: 4, steps: 1, source: {{config: {source}, model_path: {checkpoint}}}}}]"
    opts = [*tiny_opts, "model_path", str(checkpoint), "attacks", attacks]
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *opts])
    line = one_line(err)
    assert code == 2 and "normalises its input with mean [0.0, 0.0, 0.0], std [1.0, 1.0, 1.0]" in line, line
    assert line.endswith("a transfer attack here needs one normalisation for both")
    assert not (tmp_path / "result").exists()  # not even the clean mode was scored
