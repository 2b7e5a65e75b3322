"""Crash-proof training: a run killed at any moment (SIGKILL) or stopped (SIGTERM) continues with
``auto_resume`` to weights bitwise equal to an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# SAT with a random start and dropout: the data order, the augmentation, dropout and the attack's
# start all draw random numbers, so each must continue from the checkpoint exactly.
CONFIG = "config/synthetic/synthetic_pspnet18_sat.yaml"
EPOCHS = 5  # 4 iterations per epoch on the 16 tiny images
ITERS = 4 * EPOCHS


@pytest.fixture(scope="module")
def opts(tiny_data) -> list[str]:
    return [
        "data_root",
        str(tiny_data),
        "train_list",
        str(tiny_data / "list/train.txt"),
        "val_list",
        str(tiny_data / "list/val.txt"),
        "train_h",
        "33",
        "train_w",
        "33",
        "batch_size",
        "4",
        "workers",
        "0",
        "epochs",
        str(EPOCHS),
        "save_freq",
        "2",
        "print_freq",
        "1",
        "base_lr",
        "0.02",
        "manual_seed",
        "3",
        "adv_random_start",
        "True",
        "adv_steps",
        "2",
        "evaluate",
        "True",
        "batch_size_val",
        "4",
    ]


def start(opts: list[str], save_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", "--config", CONFIG, *opts, "save_path", str(save_path), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    return out


def wait_for_latest(save_path: Path, at_least: int, proc: subprocess.Popen) -> str:
    """Poll until ``latest`` names an iteration checkpoint of at least ``at_least`` iterations."""
    deadline = time.time() + 240
    while time.time() < deadline:
        pointer = save_path / "latest"
        if pointer.is_file():
            name = pointer.read_text().strip()
            if name.startswith("train_iter_") and int(name[11:-4]) >= at_least:
                return name
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared in time")


@pytest.fixture(scope="module")
def reference(opts, tmp_path_factory) -> dict:
    """The uninterrupted run's final checkpoint."""
    save_path = tmp_path_factory.mktemp("reference")
    finish(start(opts, save_path))
    return torch.load(save_path / f"train_epoch_{EPOCHS}.pth", weights_only=True)


def assert_same_run(final: dict, reference: dict) -> None:
    assert final["iteration"] == reference["iteration"] == ITERS
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])


def test_sigkill_mid_epoch_then_auto_resume_is_bitwise(opts, reference, tmp_path) -> None:
    proc = start(opts, tmp_path, "save_every_iters", "1")
    wait_for_latest(tmp_path, 6, proc)  # inside the second epoch, between or during saves
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / f"train_epoch_{EPOCHS}.pth").exists()
    out = finish(start(opts, tmp_path, "save_every_iters", "1", "auto_resume", "True"))
    assert "=> resumed" in out
    assert_same_run(torch.load(tmp_path / f"train_epoch_{EPOCHS}.pth", weights_only=True), reference)
    # Only the newest iteration checkpoint is kept beside the epoch checkpoints; latest names the last one.
    assert sorted(p.name for p in tmp_path.glob("train_*.pth")) == [
        "train_epoch_2.pth",
        "train_epoch_4.pth",
        "train_epoch_5.pth",
        f"train_iter_{ITERS}.pth",
    ]
    assert (tmp_path / "latest").read_text().strip() == "train_epoch_5.pth"


def test_sigterm_saves_exits_0_and_resumes_bitwise(opts, reference, tmp_path) -> None:
    proc = start(opts, tmp_path)
    while not list(tmp_path.glob("events.out.tfevents.*")):  # training has started
        assert proc.poll() is None
        time.sleep(0.02)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    name = (tmp_path / "latest").read_text().strip()
    assert name.startswith("train_iter_") and "auto_resume True" in out and "Training done" not in out
    stopped = torch.load(tmp_path / name, weights_only=True)
    assert 0 < stopped["iteration"] < ITERS and stopped["iteration"] == int(name[11:-4])
    finish(start(opts, tmp_path, "auto_resume", "True"))
    assert_same_run(torch.load(tmp_path / f"train_epoch_{EPOCHS}.pth", weights_only=True), reference)


def test_checkpoints_of_another_run_are_not_overwritten(opts, reference, tmp_path) -> None:
    (tmp_path / "train_iter_3.pth").write_bytes(b"another run")
    out, _ = start(opts, tmp_path).communicate(timeout=120)
    assert "already holds checkpoints" in out.strip().splitlines()[-1]
    assert (tmp_path / "train_iter_3.pth").read_bytes() == b"another run"
