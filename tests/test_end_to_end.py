"""Tiny real runs: train a PSPNet-18 for a few iterations, evaluate it clean and under BIM."""

import json
import re

import cv2
import numpy as np
import pytest
import torch

from tests.entry import test_entry, train_entry

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"


def main_losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"MainLoss (\d+\.\d+)", log)]


def test_train_then_test_clean_and_bim(run_cli, tiny_opts, tiny_data, tmp_path):
    code, out, err = run_cli(
        train_entry,
        [
            "--config",
            CONFIG,
            *tiny_opts,
            "epochs",
            "6",
            "save_freq",
            "3",
            "model_path",
            str(tmp_path / "model/train_epoch_6.pth"),
        ],
    )
    assert code == 0, err
    losses = main_losses(out)
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    assert sorted(p.name for p in (tmp_path / "model").glob("*.pth")) == ["train_epoch_3.pth", "train_epoch_6.pth"]
    assert (tmp_path / "model/latest").read_text().strip() == "train_epoch_6.pth"
    checkpoint = torch.load(tmp_path / "model/train_epoch_6.pth", weights_only=True)
    assert checkpoint["epoch"] == 6 and checkpoint["iteration"] == 24
    assert {"state_dict", "optimizer", "scaler", "rng", "data_seed", "config"} <= set(checkpoint)
    assert "ppm.features.0.1.weight" in checkpoint["state_dict"]
    assert list((tmp_path / "model").glob("events.out.tfevents.*"))
    assert (tmp_path / "model/config.yaml").is_file()

    opts = [*tiny_opts, "model_path", str(tmp_path / "model/train_epoch_6.pth")]
    code, out, err = run_cli(test_entry, ["--config", CONFIG, *opts])
    assert code == 0, err
    clean = json.loads((tmp_path / "result/results.json").read_text())
    assert re.search(r"Eval result: mIoU/mAcc/allAcc \d\.\d{4}/\d\.\d{4}/\d\.\d{4}\.", out)
    assert f"{clean['mIoU']:.4f}" in out

    code, out, err = run_cli(test_entry, ["--config", CONFIG, "--attack", *opts])
    assert code == 0, err
    bim = json.loads((tmp_path / "result/bim/results.json").read_text())
    assert 0 <= bim["mIoU"] <= clean["mIoU"] <= 1
    assert bim["allAcc"] < clean["allAcc"]
    assert bim["attack"]["eps"] == 0.03 and bim["attack"]["steps"] == 2

    names = [line.split()[0].split("/")[-1] for line in (tiny_data / "list/val.txt").read_text().splitlines()]
    for folder in ("result", "result/bim"):
        for name in names:
            gray = cv2.imread(str(tmp_path / folder / "gray" / name), cv2.IMREAD_UNCHANGED)
            label = cv2.imread(str(tiny_data / "label/val" / name), cv2.IMREAD_UNCHANGED)
            assert gray.shape == label.shape and gray.max() < 5
            assert (tmp_path / folder / "color" / name).is_file()

    # has_prediction re-scores the saved predictions and gives the same numbers.
    code, out, err = run_cli(test_entry, ["--config", CONFIG, *opts, "has_prediction", "True"])
    assert code == 0, err
    again = json.loads((tmp_path / "result/results.json").read_text())
    assert again["mIoU"] == clean["mIoU"]


def test_resume_continues_from_the_checkpoint(run_cli, tiny_opts, tmp_path):
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "epochs", "1"])
    assert code == 0, err
    code, out, err = run_cli(
        train_entry, ["--config", CONFIG, *tiny_opts, "resume", str(tmp_path / "model/train_epoch_1.pth")]
    )
    assert code == 0, err
    assert "resumed" in out and "Epoch: [2/2]" in out and "Epoch: [1/2]" not in out
    assert torch.load(tmp_path / "model/train_epoch_2.pth", weights_only=True)["epoch"] == 2
    finished = (tmp_path / "model/train_epoch_2.pth").read_bytes()
    code, out, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "auto_resume", "True"])  # a requeued job
    assert code == 0, err
    assert "nothing to train: already at iteration 8 of 8" in out and "Training done" in out
    assert (tmp_path / "model/train_epoch_2.pth").read_bytes() == finished


def test_refuses_to_overwrite_another_runs_checkpoints(run_cli, tiny_opts, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model/train_epoch_1.pth").write_bytes(b"precious")
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts])
    assert code == 2
    assert err.strip().count("\n") == 0 and "already holds checkpoints" in err
    assert (tmp_path / "model/train_epoch_1.pth").read_bytes() == b"precious"


def test_overwrite_replaces_the_previous_runs_checkpoints(run_cli, tiny_opts, tmp_path):
    """A longer earlier run's epochs go once the new run has saved, so scripts that take the highest epoch
    evaluate the new model; they stay on disk when the new run fails before its first checkpoint."""
    (tmp_path / "model").mkdir()
    for name in ("train_epoch_1.pth", "train_epoch_8.pth", "train_iter_400.pth"):
        (tmp_path / "model" / name).write_bytes(b"old run")
    code, _, _ = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "overwrite", "True", "train_list", "nowhere"])
    assert code == 2 and (tmp_path / "model/train_epoch_8.pth").read_bytes() == b"old run"
    code, out, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "epochs", "1", "overwrite", "True"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "model").glob("train_*.pth")) == ["train_epoch_1.pth"]
    assert torch.load(tmp_path / "model/train_epoch_1.pth", weights_only=True)["epoch"] == 1
    assert "deleted the previous run's checkpoints train_epoch_8.pth, train_iter_400.pth" in out


def test_deeplabv3_trains_and_evaluates(run_cli, tiny_opts, tmp_path):
    config = "config/synthetic/synthetic_aspp18.yaml"
    code, _, err = run_cli(train_entry, ["--config", config, *tiny_opts])
    assert code == 0, err
    checkpoint = torch.load(tmp_path / "model/train_epoch_2.pth", weights_only=True)
    assert "aspp.convs.4.1.weight" in checkpoint["state_dict"]
    code, _, err = run_cli(test_entry, ["--config", config, "--attack", *tiny_opts])
    assert code == 0, err
    assert 0 <= json.loads((tmp_path / "result/bim/results.json").read_text())["mIoU"] <= 1


@pytest.mark.parametrize("defense,optimizer", [("sat", "sgd"), ("ddcat", "sam"), ("pgd_at", "sgd"), ("trades", "sam")])
def test_adversarial_training_then_test(run_cli, tiny_opts, tiny_data, tmp_path, defense, optimizer):
    """SAT, DDC-AT, PGD-AT and TRADES (with SGD or SAM) train through the one train.py from their synthetic
    configs; test.py evaluates the checkpoint, a DDC-AT one through its cls1 head."""
    config = f"config/synthetic/synthetic_pspnet18_{defense}.yaml"
    code, out, err = run_cli(
        train_entry, ["--config", config, *tiny_opts, "epochs", "1", "optimizer", optimizer, "sam_warmup_iters", "1"]
    )
    assert code == 0, err
    assert f"defense {defense}, optimizer {optimizer}" in out
    assert len(main_losses(out)) == 4 and all(np.isfinite(main_losses(out)))
    state = torch.load(tmp_path / "model/train_epoch_1.pth", weights_only=True)["state_dict"]
    heads = {key.split(".")[0] for key in state} - {"layer0", "layer1", "layer2", "layer3", "layer4", "ppm"}
    assert heads == ({"cls1", "cls2", "mask1", "aux_cls1"} if defense == "ddcat" else {"cls", "aux"})

    opts = [*tiny_opts, "model_path", str(tmp_path / "model/train_epoch_1.pth")]
    code, out, err = run_cli(test_entry, ["--config", config, "--attack", *opts])
    assert code == 0, err
    bim = json.loads((tmp_path / "result/bim/results.json").read_text())
    assert 0 <= bim["mIoU"] <= 1

    from evaluation import visualize

    code, out, err = run_cli(
        visualize, ["--config", config, "--out", str(tmp_path / "picture.png"), "--scale", "2", *opts]
    )
    assert code == 0, err
    picture = cv2.imread(str(tmp_path / "picture.png"))
    first_label = (tiny_data / "list/val.txt").read_text().split()[1]
    label = cv2.imread(str(tiny_data / first_label))
    assert picture.shape[0] > 2 * label.shape[0] and picture.shape[1] > 5 * 2 * label.shape[1]


def test_attack_list_runs_with_clean_in_one_run(run_cli, tiny_opts, tmp_path):
    code, _, err = run_cli(
        train_entry,
        [
            "--config",
            CONFIG,
            *tiny_opts,
            "epochs",
            "6",
            "save_freq",
            "6",
            "model_path",
            str(tmp_path / "model/train_epoch_6.pth"),
        ],
    )
    assert code == 0, err
    tiny_opts = [*tiny_opts, "model_path", str(tmp_path / "model/train_epoch_6.pth")]
    attacks = (
        "[{name: fgsm, eps: 8}, {name: pgd, eps: [2, 8], steps: 3}, "
        "{name: bim, eps: 0.03, alpha: 0.01, steps: 2, unit: 1}]"
    )
    code, out, err = run_cli(test_entry, ["--config", CONFIG, *tiny_opts, "attacks", attacks])
    assert code == 0, err
    rows = (tmp_path / "result/results.csv").read_text().splitlines()
    assert rows[0].startswith("mode,eps,mIoU,mAcc,allAcc,")  # the older readers' columns first
    modes = [row.split(",")[0] for row in rows[1:]]
    assert modes == ["clean", "fgsm_eps8", "pgd_eps2", "pgd_eps8", "bim_eps0.03", "worst_case_eps8"]
    miou = {row.split(",")[0]: float(row.split(",")[2]) for row in rows[1:]}
    allacc = {row.split(",")[0]: float(row.split(",")[4]) for row in rows[1:]}
    assert allacc["pgd_eps8"] <= allacc["pgd_eps2"] <= allacc["clean"]
    assert allacc["pgd_eps8"] < allacc["clean"] and miou["pgd_eps8"] <= miou["clean"]
    # the listed BIM is the original protocol: the same numbers as --attack
    code, _, err = run_cli(test_entry, ["--config", CONFIG, "--attack", *tiny_opts])
    assert code == 0, err
    bim = json.loads((tmp_path / "result/bim/results.json").read_text())
    assert bim["mIoU"] == pytest.approx(miou["bim_eps0.03"], abs=1e-6)
    assert "| pgd_eps8 | 8.00/255 |" in out
