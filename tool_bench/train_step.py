"""Time training steps on random data on the current device, one JSON line per defense.

    python tool_bench/train_step.py --arch psp --layers 50 --crop 97 --batch 4 --steps 3 --defense sat
    python tool_bench/train_step.py --defense none --defense sat --defense ddcat --original

Each measurement runs in its own process (so ``peak_rss_mb`` is that defense's), after one untimed
warm-up step. ``--original`` also times the original DDC-AT code's iteration (:mod:`tool_bench.original`)
on the same model, data and device, and adds ``"impl": "original"`` lines and a ``speedup`` field.
``--flops`` counts the floating-point operations of one more step (``torch.utils.flop_counter``) and adds
``gflop_per_step`` (and, with ``--original``, ``flop_ratio``: the speed-up that equal FLOP throughput
would give, i.e. what the work removed is worth).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
from torch.utils.flop_counter import FlopCounterMode

from defense import DEFENSES, TrainingAttack, train_step
from model import build_model
from util.amp import MixedPrecision
from util.device import select_device
from util.optim import build_optimizer


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time training steps on random data")
    parser.add_argument("--arch", default="psp", choices=["psp", "aspp", "deeplabv3plus"])
    parser.add_argument("--backbone", default="resnet", choices=["resnet", "mobilenetv2"])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--crop", type=int, default=97, help="square crop size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument(
        "--defense", action="append", choices=["none", "sat", "ddcat"], help="repeatable; default: none, sat, ddcat"
    )
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "sam"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--original", action="store_true", help="also time the original code's iteration")
    parser.add_argument("--flops", action="store_true", help="also count the FLOPs of one step")
    parser.add_argument(
        "--amp",
        default="off",
        choices=["off", "bf16"],
        help="autocast the step (ours: util.amp; the original: around its iteration)",
    )
    parser.add_argument("--impl", default="ours", choices=["ours", "original"], help=argparse.SUPPRESS)
    return parser


def step_function(args: argparse.Namespace, defense_name: str, device: torch.device):
    """A closure running one training step of ``args.impl`` on a fresh model and fixed random data."""
    net = (
        build_model(args.arch, args.layers, args.classes, backbone=args.backbone, ddcat=defense_name == "ddcat")
        .to(device)
        .train()
    )
    optimizer, _ = build_optimizer(args.optimizer if args.impl == "ours" else "sgd", net, 0.01)
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    target = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), device=device)
    if args.impl == "ours":
        defense = DEFENSES.get(defense_name)(aux_weight=0.4, ignore_label=255, attack=TrainingAttack())
        amp = MixedPrecision(device.type, args.amp)
        return lambda: train_step(net, defense, optimizer, images, target, curr_iter=1, amp=amp)

    from tool_bench.original import original_step

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            original_step(defense_name, net, optimizer, images, target)

    return step


def measure(args: argparse.Namespace, defense_name: str) -> dict:
    """Time ``args.steps`` steps of one defense in this process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = select_device(args.device, [0])
    step = step_function(args, defense_name, device)
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    result = {
        "defense": defense_name,
        "arch": args.arch,
        "layers": args.layers,
        "crop": args.crop,
        "batch": args.batch,
        "ms_per_step": round(seconds * 1000, 1),
        "images_per_s": round(args.batch / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.flops:
        with FlopCounterMode(display=False) as counter:
            step()
        result["gflop_per_step"] = round(counter.get_total_flops() / 1e9, 1)
    return {**result, **settings(args, device)}


def settings(args: argparse.Namespace, device: torch.device) -> dict:
    """The fields of a result line that differ from the defaults, and the CUDA memory peak."""
    extra = {}
    if args.backbone != "resnet":
        extra["backbone"] = args.backbone
    if args.amp != "off":
        extra["amp"] = args.amp
    if args.impl != "ours":
        extra["impl"] = args.impl
    if device.type == "cuda":
        extra["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return extra


def main() -> None:
    args = get_parser().parse_args()
    defenses = args.defense or ["none", "sat", "ddcat"]
    if len(defenses) == 1 and "--impl" in sys.argv:  # a child process: one measurement
        print(json.dumps(measure(args, defenses[0])), flush=True)
        return
    passthrough = [a for a in sys.argv[1:] if a != "--original"]
    passthrough = [
        a for i, a in enumerate(passthrough) if a != "--defense" and (i == 0 or passthrough[i - 1] != "--defense")
    ]
    for name in defenses:
        results = {}
        for impl in ["ours", "original"] if args.original else ["ours"]:
            child = subprocess.run(
                [sys.executable, __file__, *passthrough, "--defense", name, "--impl", impl],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                sys.exit(f"error: measuring {name} ({impl}) failed: {child.stderr.strip().splitlines()[-1:]}")
            results[impl] = json.loads(child.stdout.strip().splitlines()[-1])
        if "original" in results:
            results["ours"]["speedup"] = round(results["original"]["ms_per_step"] / results["ours"]["ms_per_step"], 2)
            if args.flops:
                results["ours"]["flop_ratio"] = round(
                    results["original"]["gflop_per_step"] / results["ours"]["gflop_per_step"], 2
                )
            print(json.dumps(results["original"]), flush=True)
        print(json.dumps(results["ours"]), flush=True)


if __name__ == "__main__":
    main()
