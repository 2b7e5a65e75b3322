"""The CUDA path checked and timed in one run (``sh tool_bench/gpu_check.sh OUT_DIR [--dry-run]``).

Phases, each recorded in ``OUT_DIR/gpu_check.json`` (and logged by the shell wrapper):

1. ``tests``: the suite's device-sensitive tests (``pytest -m device``) with CUDA visible.
2. ``matrix``: a few training iterations of each model (PSPNet-50, DeepLabV3-50, VainF's
   deeplabv3plus_mobilenet and deeplabv3_resnet50) for none / SAT / DDC-AT / SAM in fp32, bf16 and fp16,
   with and without channels_last, on random data at 473x473, batch 8: losses finite, ms per step, peak
   memory. Then fp32 CUDA against the CPU on the first step (loss and parameters, TF32 off).
3. ``torchrun``: train.py under torchrun with one process on nccl (SyncBatchNorm on CUDA), then test.py
   clean, under the original BIM-2 and a short SEA on a few synthetic images.
4. ``bench``: tool_bench/train_step.py --original in fp32 and bf16, and tool_bench/eval.py, at the matrix size.

``--dry-run`` runs every phase on the CPU at toy sizes (ResNet-18 models, 33x33 crops, batch 2) so that the
test suite keeps the script from rotting; its timings mean nothing. Exit code 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from defense import TrainingAttack, train_step
from defense.base import DEFENSES as STRATEGIES
from model import build_model
from model.vainf import VainFDeepLab
from util.amp import MixedPrecision
from util.optim import build_optimizer

DEFENSES = ("none", "sat", "ddcat", "sam")
PRECISIONS = ("fp32", "bf16", "fp16")
SYNTHETIC = "config/synthetic/synthetic_pspnet18.yaml"


@dataclass(frozen=True)
class Plan:
    """Sizes and models of one run: the real check on CUDA, or the toy dry run on the CPU."""

    device: torch.device
    crop: int
    batch: int
    steps: int
    models: tuple[str, ...]  # psp50, aspp50 (ours, with ResNet depth) or a VainF model name
    bench_layers: int
    bench_defenses: tuple[str, ...]
    bench_amps: tuple[str, ...]
    sea_steps: int
    dry_run: bool = False

    @classmethod
    def for_run(cls, dry_run: bool) -> Plan:
        if dry_run:
            return cls(
                torch.device("cpu"),
                33,
                2,
                1,
                ("psp18", "deeplabv3plus_mobilenet"),
                18,
                ("sat",),
                ("off",),
                5,
                dry_run=True,
            )
        models = ("psp50", "aspp50", "deeplabv3plus_mobilenet", "deeplabv3_resnet50")
        return cls(torch.device("cuda"), 473, 8, 3, models, 50, ("none", "sat", "ddcat"), ("off", "bf16"), 20)

    def cases(self) -> list[tuple[str, str, str, bool]]:
        """(model, defense, precision, channels_last): every combination (DDC-AT on our models only); the dry run
        keeps fp32 for every defense of the first model and one step of each other setting (bf16 and fp16 are slow
        on CPUs)."""
        every = [
            (name, defense, precision, channels_last)
            for name in self.models
            for defense in DEFENSES
            for precision in PRECISIONS
            for channels_last in (False, True)
            if defense != "ddcat" or name[:3] in ("psp", "asp")
        ]
        if not self.dry_run:
            return every
        return [
            case
            for case in every
            if (case[0] == self.models[0] and case[2] == "fp32") or (case[1] == "none" and not case[3])
        ]


def build(name: str, ddcat: bool, classes: int = 21) -> torch.nn.Module:
    """``psp50`` / ``aspp18`` (ours, arch and ResNet depth) or a VainF model name."""
    if name[:3] in ("psp", "asp"):
        arch = "psp" if name.startswith("psp") else "aspp"
        return build_model(arch, int(name.lstrip("psa")), classes, ddcat=ddcat)
    return VainFDeepLab(name, classes)


def run_steps(net, defense_name: str, precision: str, channels_last: bool, images, target, steps: int) -> dict:
    """``steps`` training steps after one warm-up; losses and timing (CUDA synchronised)."""
    device = images.device
    mode = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}[precision]
    amp = MixedPrecision(device.type, mode, False, torch.amp.GradScaler(device.type, enabled=mode == "fp16"))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer("sam" if defense_name == "sam" else "sgd", net, 0.01)
    defense = STRATEGIES.get("none" if defense_name == "sam" else defense_name)(attack=TrainingAttack())
    losses = [float(train_step(net, defense, optimizer, images, target, 1, amp).loss)]
    sync(device)
    start = time.perf_counter()
    for step in range(steps):
        losses.append(float(train_step(net, defense, optimizer, images, target, step + 2, amp).loss))
    sync(device)
    return {
        "losses": [round(v, 5) for v in losses],
        "ms_per_step": round((time.perf_counter() - start) / max(steps, 1) * 1000, 1),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_batch(plan: Plan, classes: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(plan.batch, 3, plan.crop, plan.crop, generator=generator)
    target = torch.randint(0, classes, (plan.batch, plan.crop, plan.crop), generator=generator)
    target[:, :8] = 255
    return images, target


def matrix(plan: Plan) -> tuple[list[dict], list[str]]:
    """Every case of the plan; a case fails on an error or a non-finite loss."""
    rows, failures = [], []
    images, target = (t.to(plan.device) for t in random_batch(plan))
    for name, defense_name, precision, channels_last in plan.cases():
        case = {"model": name, "defense": defense_name, "precision": precision, "channels_last": channels_last}
        torch.manual_seed(0)
        reset_peak(plan.device)
        try:
            net = build(name, defense_name == "ddcat").to(plan.device).train()
            case.update(run_steps(net, defense_name, precision, channels_last, images, target, plan.steps))
            case["finite"] = all(map(math.isfinite, case["losses"]))
        except Exception as error:  # a CUDA bug is a finding: record it, carry on
            case.update(finite=False, error=f"{type(error).__name__}: {error}"[:300])
        case.update(peak_memory(plan.device))
        if not case["finite"]:
            failures.append(
                f"matrix {name} {defense_name} {precision} cl={channels_last}: {case.get('error', case.get('losses'))}"
            )
        print(json.dumps(case), flush=True)
        rows.append(case)
    return rows, failures


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    return {"peak_cuda_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)} if device.type == "cuda" else {}


def first_step_against_cpu(plan: Plan, tolerance: float = 1e-3) -> tuple[list[dict], list[str]]:
    """fp32 on the device against the CPU for one SGD step of each of our models (TF32 off): the loss and the
    parameters after the step agree to ``tolerance`` (relative)."""
    if plan.device.type != "cuda":
        return [{"skipped": "no CUDA device (dry run)"}], []
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows, failures = [], []
    images, target = random_batch(plan)
    for name in plan.models[:2]:
        torch.manual_seed(0)
        cpu_net = build(name, False).train()
        cuda_net = copy.deepcopy(cpu_net).to(plan.device)
        cpu = run_steps(cpu_net, "none", "fp32", False, images, target, 0)["losses"][0]
        cuda = run_steps(cuda_net, "none", "fp32", False, images.to(plan.device), target.to(plan.device), 0)
        loss_diff = abs(cuda["losses"][0] - cpu) / max(abs(cpu), 1e-12)
        param_diff = max(
            float((a.detach().cpu() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1e-12))
            for a, b in zip(cuda_net.parameters(), cpu_net.parameters())
        )
        row = {"model": name, "loss_rel_diff": loss_diff, "param_rel_diff": param_diff}
        rows.append(row)
        if loss_diff > tolerance or param_diff > tolerance:
            failures.append(f"first step {name}: CUDA and CPU differ {row}")
    return rows, failures


def command(args: list[str], log: list[dict], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one subprocess from the repository root, echo its output, record its exit code."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    sys.stdout.write(done.stdout[-4000:] + done.stderr[-4000:])
    log.append(
        {"command": " ".join(args)[:300], "rc": done.returncode, "seconds": round(time.perf_counter() - started, 1)}
    )
    return done


def tests(dry_run: bool, pytest_args: list[str]) -> tuple[dict, list[str]]:
    """The device-marked tests; in the dry run only their collection (the suite runs them itself)."""
    log: list[dict] = []
    extra = ["--collect-only"] if dry_run else []
    done = command(
        [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider", *extra, *pytest_args, "tests"],
        log,
        timeout=480,
    )
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    failures = [] if done.returncode == 0 else [f"device tests: {summary}"]
    return {"summary": summary, **log[0]}, failures


def torchrun(plan: Plan, work: Path) -> tuple[list[dict], list[str]]:
    """train.py under torchrun (one process, nccl on CUDA), then test.py clean, BIM-2 and a short SEA."""
    from tool_data.synthetic import generate

    data = work / "synthetic"
    generate(data, seed=0, num_train=16, num_val=4, size=48)
    device = "cuda" if plan.device.type == "cuda" else "cpu"
    settings = {
        **dict.fromkeys(("val_list", "test_list"), data / "list/val.txt"),
        **dict.fromkeys(("train_h", "train_w", "test_h", "test_w"), 33),
        "data_root": data,
        "train_list": data / "list/train.txt",
        "device": device,
        "base_size": 56,
        "batch_size": 4,
        "workers": 2,
        "epochs": 1,
        "save_freq": 1,
        "save_path": work / "model",
        "model_path": work / "model/train_epoch_1.pth",
        "index_step": 2,
    }
    common = [str(word) for pair in settings.items() for word in pair]
    log: list[dict] = []
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    command([*launch, "train.py", "--config", SYNTHETIC, *common, "dist_backend", "nccl", "sync_bn", "True"], log)
    attacks = (
        f"[{{name: bim, eps: 0.03, alpha: 0.01, steps: 2, unit: 1}}, {{name: sea, eps: 8, steps: {plan.sea_steps}}}]"
    )
    evaluate = [sys.executable, "test.py", "--config", SYNTHETIC, *common, "save_folder", work / "result"]
    command([*map(str, evaluate), "attacks", attacks], log)
    results = work / "result" / "results.json"
    if results.is_file():
        log.append({"results": json.loads(results.read_text())})
    failures = [
        f"torchrun phase: {entry['command'][:120]} exited {entry['rc']}" for entry in log if entry.get("rc", 0) != 0
    ]
    return log, failures


def bench(plan: Plan) -> tuple[list[dict], list[str]]:
    """Ours against the original iteration (fp32 and bf16) and evaluation, as JSON lines of the bench tools."""
    size = [
        "--crop",
        str(plan.crop),
        "--batch",
        str(plan.batch),
        "--steps",
        str(plan.steps),
        "--layers",
        str(plan.bench_layers),
        "--device",
        plan.device.type,
    ]
    defenses = [arg for name in plan.bench_defenses for arg in ("--defense", name)]
    runs = [[*size, "--original", *defenses, "--amp", amp] for amp in plan.bench_amps]
    log: list[dict] = []
    rows: list[dict] = []
    for extra in runs:
        done = command([sys.executable, "tool_bench/train_step.py", *extra], log)
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    eval_size = [
        "--layers",
        str(plan.bench_layers),
        "--size",
        str(plan.crop),
        "--crop",
        str(plan.crop),
        "--base_size",
        str(plan.crop + 39),
        "--images",
        "2",
        "--device",
        plan.device.type,
    ]
    done = command([sys.executable, "tool_bench/eval.py", *eval_size], log)
    rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    failures = [f"bench: {entry['command'][:120]} exited {entry['rc']}" for entry in log if entry["rc"] != 0]
    return log + rows, failures


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check and time the CUDA path (see the module docstring)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="every phase on the CPU at toy sizes")
    parser.add_argument("--phases", default="tests,matrix,torchrun,bench", help="comma-separated subset")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments for the tests phase")
    return parser


def main() -> int:
    args = get_parser().parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible; run on a GPU machine, or add --dry-run to check the script on the CPU",
            file=sys.stderr,
        )
        return 2
    plan = Plan.for_run(args.dry_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "device": torch.cuda.get_device_name(0) if plan.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "plan": {**vars(plan), "device": str(plan.device)},
        "phases": {},
        "failures": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for phase in args.phases.split(","):
            print(f"== {phase}", flush=True)
            phase_start = time.perf_counter()
            if phase == "tests":
                result, failures = tests(args.dry_run, args.pytest_args.split())
            elif phase == "matrix":
                rows, failures = matrix(plan)
                first, first_failures = first_step_against_cpu(plan)
                result, failures = {"cases": rows, "first_step_vs_cpu": first}, failures + first_failures
            elif phase == "torchrun":
                result, failures = torchrun(plan, Path(tmp))
            elif phase == "bench":
                result, failures = bench(plan)
            else:
                print(f"error: unknown phase {phase!r}; use tests, matrix, torchrun, bench", file=sys.stderr)
                return 2
            summary["phases"][phase] = {"seconds": round(time.perf_counter() - phase_start, 1), "result": result}
            summary["failures"] += failures
            with contextlib.suppress(OSError):
                (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(f"== {len(summary['failures'])} failures in {summary['seconds']} s; summary: {out / 'gpu_check.json'}")
    for failure in summary["failures"]:
        print(f"FAILED {failure}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
