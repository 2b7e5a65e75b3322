"""Distributed training on the CPU (gloo) and mixed precision.

The central check: 2 processes, each with its half of a global batch of 4, make the same updates as one
process with the whole batch (float64, dropout 0, so "the same" means equal to rounding). The batches are
built so that every shortcut fails it: the ranks hold very different numbers of ignored pixels (a per-rank
mean loss differs from the global one), BN statistics differ between 2 and 4 images, and SAT's adversarial
half must be the global batch's second half.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from defense import DEFENSES, SAT, TrainingAttack, train_step, unwrap
from model import build_model
from tests.conftest import ROOT
from tests.entry import train_entry
from util import dist
from util.amp import MixedPrecision, amp_mode, build_amp
from util.config import load_config
from util.optim import build_optimizer, set_lr

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"
CLASSES, SIZE, STEPS, LR = 3, 17, 2, 0.05
CASES = [("none", "sgd"), ("sat", "sgd"), ("none", "sam"), ("ddcat", "sgd")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 images; the odd ones (rank 1's) have 70% ignored pixels, the even ones 5%."""
    g = torch.Generator().manual_seed(100 + step)
    images = torch.randn(4, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    target = torch.randint(0, CLASSES, (4, SIZE, SIZE), generator=g)
    ignored = torch.rand(4, SIZE, SIZE, generator=g) < torch.tensor([0.05, 0.7, 0.05, 0.7]).view(4, 1, 1)
    return images, target.masked_fill(ignored, 255)


def run_steps(defense_name: str, optimizer_name: str) -> dict[str, torch.Tensor]:
    """STEPS updates through train.py's train_step; this process takes images rank, rank + N, ... of each
    global batch, as DistributedSampler deals them."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("psp", 18, CLASSES, dropout=0.0, ddcat=defense_name == "ddcat").double()
    model = train_entry.prepare_model(model, cpu, sync_bn=True, channels_last=False)
    optimizer, split = build_optimizer(optimizer_name, model, LR, sam_rho=0.05)
    model = dist.wrap(model, cpu).train()
    defense = DEFENSES.get(defense_name)(attack=TrainingAttack(eps=0.03, steps=2))
    for step in range(STEPS):
        images, target = global_batch(step)
        set_lr(optimizer, LR, split)
        rank, world = dist.rank(), dist.world_size()
        train_step(model, defense, optimizer, images[rank::world], target[rank::world], step + 1)
    return {k: v.clone() for k, v in unwrap(model).state_dict().items()}


def worker(rank: int, world: int, port: int, out: str) -> None:
    """One of the processes, joined by the original keys (torchrun's environment is tested with train.py)."""
    torch.set_num_threads(1)
    assert not dist.under_torchrun()
    device = dist.setup(torch.device("cpu"), dist_url=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    assert device == torch.device("cpu") and dist.world_size() == world
    assert dist.is_main_process() == (rank == 0)
    states = {case: run_steps(*case) for case in CASES}
    torch.save(states, Path(out) / f"rank{rank}.pt")
    dist.cleanup()


@pytest.fixture(scope="module")
def two_process_states(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    mp.start_processes(worker, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn", join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_two_processes_make_the_one_process_update(two_process_states, case) -> None:
    single = run_steps(*case)
    rank0, rank1 = (states[case] for states in two_process_states)
    moved = max(
        (single[k].double() - v.double()).abs().max().item()
        for k, v in build_model("psp", 18, CLASSES, dropout=0.0, ddcat=case[0] == "ddcat").double().state_dict().items()
        if v.is_floating_point() and "running" not in k
    )
    assert moved > 1e-3  # the steps did move the weights
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key  # DDP keeps the replicas identical
        assert torch.allclose(rank0[key].double(), value.double(), rtol=0, atol=1e-5), key


def test_one_process_helpers_are_no_ops() -> None:
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main_process()
    x = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(x) is x and dist.all_reduce_mean(x) is x and dist.broadcast_object(7) == 7
    model = torch.nn.Conv2d(1, 1, 1)
    assert dist.wrap(model, torch.device("cpu")) is model


def _tiny_run(run_cli, tiny_opts, *opts):
    return run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "train_h", "17", "train_w", "17", *opts])


def test_bf16_trains_with_finite_losses_and_fp16_checkpoints_its_scaler(run_cli, tiny_opts, tiny_data, tmp_path):
    lines = (tiny_data / "list/train.txt").read_text().splitlines()
    four, two = tmp_path / "four.txt", tmp_path / "two.txt"
    four.write_text("\n".join(lines[:4]) + "\n")
    two.write_text("\n".join(lines[:2]) + "\n")
    code, out, err = _tiny_run(
        run_cli,
        tiny_opts,
        "train_list",
        str(four),
        "batch_size",
        "2",
        "epochs",
        "1",
        "amp",
        "bf16",
        "channels_last",
        "True",
    )
    assert code == 0, err
    assert "amp bf16" in out and "channels_last is for CUDA: ignored on the CPU" in out
    losses = [float(x) for x in re.findall(r" Loss (\S+) Accuracy", out)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert torch.load(tmp_path / "model/train_epoch_1.pth", weights_only=True)["scaler"] == {}

    opts = ["train_list", str(two), "batch_size", "2", "amp", "fp16"]
    code, out, err = _tiny_run(run_cli, tiny_opts, *opts, "epochs", "1", "overwrite", "True")
    assert code == 0, err
    checkpoint = torch.load(tmp_path / "model/train_epoch_1.pth", weights_only=True)
    assert set(checkpoint["scaler"]) == {
        "scale",
        "growth_factor",
        "backoff_factor",
        "growth_interval",
        "_growth_tracker",
    }
    # resuming restores the scaler: a scale no fresh scaler has (65536, halved on overflow) carries on
    checkpoint["scaler"].update(scale=1024.0, _growth_tracker=5)
    torch.save(checkpoint, tmp_path / "model/train_epoch_1.pth")
    code, out, err = _tiny_run(
        run_cli, tiny_opts, *opts, "epochs", "2", "resume", str(tmp_path / "model/train_epoch_1.pth")
    )
    assert code == 0, err
    scaler = torch.load(tmp_path / "model/train_epoch_2.pth", weights_only=True)["scaler"]
    assert (scaler["scale"], scaler["_growth_tracker"]) in ((1024.0, 6), (512.0, 0))


@pytest.mark.parametrize(
    "use_apex,opt_level,expected",
    [(False, "O1", "off"), (True, "O0", "off"), (True, "O1", "fp16"), (True, "O2", "fp16")],
)
def test_original_apex_keys_map_to_amp(use_apex, opt_level, expected, caplog) -> None:
    cfg = load_config(CONFIG, ["use_apex", str(use_apex), "opt_level", opt_level])
    caplog.set_level("INFO")
    assert amp_mode(cfg) == expected
    amp = build_amp(cfg, torch.device("cpu"))
    assert amp.scaler.is_enabled() == (expected == "fp16")
    assert ("amp fp16 through torch.amp" in caplog.text) == (expected == "fp16")


def test_amp_values(run_cli, tiny_opts) -> None:
    assert load_config(CONFIG, ["amp", "off"]).amp == "off"  # YAML reads a bare off as False
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "amp", "fp8"])
    assert code == 2 and err.strip() == (
        f"error: config '{CONFIG}': amp must be one of ['off', 'bf16', 'fp16'], got 'fp8'"
    )
    code, _, err = run_cli(train_entry, ["--config", CONFIG, *tiny_opts, "use_apex", "True", "opt_level", "O7"])
    assert code == 2 and "opt_level" in err and err.strip().count("\n") == 0


def test_train_py_under_torchrun_restarts_a_killed_worker_from_the_last_checkpoint(tiny_opts, tmp_path) -> None:
    """torchrun with 2 processes and --max-restarts 1: rank 0 alone logs and writes; a worker killed after the
    first checkpoint restarts both, which resume from it (auto_resume) and finish; validation scores every
    image once per epoch; a global batch that does not divide is a one-line error."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "train.py",
        "--config",
        CONFIG,
        *tiny_opts,
        "train_h",
        "17",
        "train_w",
        "17",
        "epochs",
        "3",
        "evaluate",
        "True",
        "amp",
        "bf16",
        "auto_resume",
        "True",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "torchrun.log"
    with open(log, "w") as sink:  # a file, not a pipe: nobody has to keep reading while we wait
        run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        first = tmp_path / "model/train_epoch_1.pth"
        while not first.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        children = subprocess.run(
            ["ps", "-o", "pid=,args=", "--ppid", str(run.pid)], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        workers = [int(line.split()[0]) for line in children if "train.py" in line]
        assert len(workers) == 2, log.read_text()[-3000:]
        os.kill(workers[-1], signal.SIGKILL)
        run.wait(timeout=300)
    finally:
        if run.poll() is None:  # a failed check above: end the launcher and its workers (our own session)
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    out = log.read_text()
    assert run.returncode == 0, out[-4000:]
    assert "x 2 processes" in out and "exitcode: -9" in out  # the killed worker, reported by torchrun
    assert out.count("Epoch: [1/3]") == 16 // 4  # 4 iterations of 2 + 2 images, logged by rank 0 only
    assert out.count("=> resumed") == 1 and out.count("Epoch: [3/3]") == 4
    assert 2 <= out.count("Val result") <= 3
    checkpoint = torch.load(tmp_path / "model/train_epoch_3.pth", weights_only=True)
    assert checkpoint["epoch"] == 3 and "layer0.0.weight" in checkpoint["state_dict"]
    assert not any(k.startswith("module.") for k in checkpoint["state_dict"])

    proc = subprocess.run(
        [*cmd[:5], *cmd[6:], "batch_size", "3", "overwrite", "True"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "error: config key 'batch_size' (3) is the global batch and must divide by the 2 processes" in proc.stderr


@pytest.mark.parametrize(
    "script,program",
    [
        ("tool_train/synthetic/psp_train.sh", "train.py"),
        ("tool_test/synthetic/psp_test.sh", "test.py"),
        ("tool_test/synthetic/robust_eval.sh", "test.py"),
    ],
)
def test_scripts_launch_torchrun_when_nproc_is_above_one(script, program) -> None:
    exp_name = f"pytest-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": exp_name, "NPROC": "2", "OMP_NUM_THREADS": "1"}
    command = ["sh", script, "base_lrr", "1"]
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        bad = subprocess.run(
            command, cwd=ROOT, env={**env, "NPROC": "two"}, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        shutil.rmtree(ROOT / "exp/synthetic" / exp_name, ignore_errors=True)
    assert proc.returncode != 0
    # each worker refuses the key; torchrun stops the other once the first has exited, so one line may be all
    assert proc.stdout.count("error: command line: unknown config key 'base_lrr'; did you mean 'base_lr'?") >= 1
    assert f"{program} FAILED" in proc.stdout  # torchrun's report
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: NPROC must be a positive integer (processes on this machine), got 'two'"
    )


@pytest.mark.parametrize("adv_amp", [False, True])
def test_training_attack_crafts_in_fp32_unless_adv_amp(adv_amp) -> None:
    torch.manual_seed(0)
    model = build_model("psp", 18, CLASSES, dropout=0.0).train()
    dtypes = []
    model.layer0.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    optimizer, _ = build_optimizer("sgd", model, LR)
    images, target = global_batch(0)
    amp = MixedPrecision("cpu", "bf16", adv=adv_amp)
    train_step(
        model,
        SAT(attack=TrainingAttack(eps=0.03, steps=2)),
        optimizer,
        images[:2].float(),
        target[:2],
        1,
        amp,
    )
    crafting = torch.bfloat16 if adv_amp else torch.float32
    assert dtypes == [crafting, crafting, torch.bfloat16]  # 2 attack steps, then the training forward


def test_test_py_over_two_processes_gives_the_one_process_results(run_cli, tiny_opts, tmp_path) -> None:
    """test.py under torchrun: each rank predicts its share of the images (clean and under BIM), rank 0 scores
    all stored predictions: the same predictions and numbers as one process."""
    from tests.entry import test_entry

    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pth"
    torch.save({"state_dict": build_model("psp", 18, 5, pretrained=False).state_dict()}, checkpoint)
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "attacks",
        "[{name: bim, eps: 0.03, alpha: 0.01, steps: 2, unit: 1}]",
    ]
    code, _, err = run_cli(test_entry, [*opts, "save_folder", str(tmp_path / "one")])
    assert code == 0, err
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "test.py",
            *opts,
            "save_folder",
            str(tmp_path / "two"),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("Eval result: mIoU") == 2  # clean and BIM, logged by rank 0 only
    assert (tmp_path / "two/results.csv").read_text() == (tmp_path / "one/results.csv").read_text()
    for mode in ("", "bim_eps0.03"):
        one, two = (json.loads((tmp_path / run / mode / "results.json").read_text()) for run in ("one", "two"))
        assert one["images"] == two["images"] == 4
        assert [one[k] for k in ("mIoU", "mAcc", "allAcc", "classes")] == [
            two[k] for k in ("mIoU", "mAcc", "allAcc", "classes")
        ]
        grays = [sorted((tmp_path / run / mode / "gray").iterdir()) for run in ("one", "two")]
        assert [p.name for p in grays[0]] == [p.name for p in grays[1]] and len(grays[0]) == 4
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*grays))
