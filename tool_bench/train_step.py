"""Time training steps on random data on the current device, one JSON line per defense.

    python tool_bench/train_step.py --arch psp --layers 50 --crop 97 --batch 4 --steps 3 --defense sat
    python tool_bench/train_step.py --defense none --defense sat --defense ddcat --original

Each measurement runs in its own process (so ``peak_rss_mb`` is that defense's), after one untimed
warm-up step. ``--original`` also times the original DDC-AT code's iteration (:mod:`tool_bench.original`)
on the same model, data and device, and adds ``"impl": "original"`` lines and a ``speedup`` field.
``--flops`` counts the floating-point operations of one more step (``torch.utils.flop_counter``) and adds
``gflop_per_step`` (and, with ``--original``, ``flop_ratio``: the speed-up that equal FLOP throughput
would give, i.e. what the work removed is worth; ``of_flop_bound`` is the speed-up over it). ``--repeat N``
measures each pair N times back to back and reports the medians (on a shared machine single runs vary by
10 % or more).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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
from model import MODELS, build_model
from util.amp import MixedPrecision
from util.device import select_device
from util.errors import ArgumentParser, run_main
from util.optim import build_optimizer


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Time training steps on random data")
    parser.add_argument("--arch", default="psp", choices=["psp", "aspp", "deeplabv3plus"])
    parser.add_argument("--backbone", default="resnet", choices=["resnet", "mobilenetv2"])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--crop", type=int, default=97, help="square crop size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument(
        "--defense",
        action="append",
        choices=["none", "sat", "ddcat", "pgd_at"],
        help="repeatable; default: none, sat, ddcat; pgd_at (with --model): PIR-AT's step",
    )
    parser.add_argument(
        "--adv-param-grads", action="store_true", help="pgd_at: ours with PIR-AT's slip (adv_param_grads True)"
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
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure ours and the original back to back N times; report medians"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="a network named whole (config key model, e.g. upernet_convnext_t_cvst); ours only",
    )
    parser.add_argument("--impl", default="ours", choices=["ours", "original"], help=argparse.SUPPRESS)
    return parser


def step_function(args: argparse.Namespace, defense_name: str, device: torch.device):
    """A closure running one training step of ``args.impl`` on a fresh model and fixed random data."""
    if args.model:
        net = MODELS.get(args.model, "--model")(args.model, args.classes)
    else:
        net = build_model(args.arch, args.layers, args.classes, backbone=args.backbone, ddcat=defense_name == "ddcat")
    net = net.to(device).train()
    target = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), device=device)
    if defense_name == "pgd_at":  # PIR-AT's step: AdamW, [0, 1] pixels, PGD-5 at 4/255
        images = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
        return pirat_step_function(args, net, images, target, device)
    optimizer, _ = build_optimizer(args.optimizer if args.impl == "ours" else "sgd", net, 0.01)
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    if args.impl == "ours":
        defense = DEFENSES.get(defense_name)(aux_weight=0.4, ignore_label=255, attack=TrainingAttack())
        amp = MixedPrecision(device.type, args.amp)
        return lambda: train_step(net, defense, optimizer, images, target, curr_iter=1, amp=amp)

    from tool_bench.original import original_step

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            original_step(defense_name, net, optimizer, images, target)

    return step


def pirat_step_function(args: argparse.Namespace, net, images: torch.Tensor, target: torch.Tensor, device):
    """PIR-AT's step, ours (``pgd_at`` with its attack) or the reference's iteration restated."""
    optimizer, _ = build_optimizer("adamw", net, 1e-3, weight_decay=0.01, head_mult=1.0)
    if args.impl == "original":
        from tool_bench.original import pirat_step

        return lambda: pirat_step(net, optimizer, images, target)
    attack = TrainingAttack(
        4 / 255, 5, 0.01, keep="best_batch_loss", param_grads=args.adv_param_grads, mean=(0, 0, 0), std=(1, 1, 1)
    )
    defense = DEFENSES.get("pgd_at")(aux_weight=0.4, ignore_label=255, attack=attack)
    amp = MixedPrecision(device.type, args.amp)
    return lambda: train_step(net, defense, optimizer, images, target, curr_iter=1, amp=amp)


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
    network = {"model": args.model} if args.model else {"arch": args.arch, "layers": args.layers}
    result = {
        "defense": defense_name,
        **network,
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
    extra = {"adv_param_grads": True} if args.adv_param_grads and args.impl == "ours" else {}
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
    parser = get_parser()
    args = parser.parse_args()
    if args.repeat < 1 or args.steps < 1:
        parser.error(f"--repeat and --steps must be at least 1, got {args.repeat} and {args.steps}")
    defenses = args.defense or ["none", "sat", "ddcat"]
    if args.model and ("ddcat" in defenses or (args.original and defenses != ["pgd_at"])):
        parser.error("--model times ours with --defense none, sat or pgd_at; with --original, pgd_at only (PIR-AT's)")
    if "pgd_at" in defenses and not args.model:
        parser.error("--defense pgd_at times PIR-AT's step: give --model (upernet_convnext_t_cvst, ...)")
    if args.model:
        MODELS.get(args.model, "train_step.py --model")  # an unknown name: one line, with the known ones
    if len(defenses) == 1 and "--impl" in sys.argv:  # a child process: one measurement
        print(json.dumps(measure(args, defenses[0])), flush=True)
        return
    passthrough = [a for a in sys.argv[1:] if a != "--original"]
    passthrough = [
        a for i, a in enumerate(passthrough) if a != "--defense" and (i == 0 or passthrough[i - 1] != "--defense")
    ]
    for name in defenses:
        runs = [{impl: child_measurement(passthrough, name, impl) for impl in impls(args)} for _ in range(args.repeat)]
        for line in summarize(runs, args):
            print(json.dumps(line), flush=True)


def impls(args: argparse.Namespace) -> list[str]:
    return ["ours", "original"] if args.original else ["ours"]


def child_measurement(passthrough: list[str], name: str, impl: str) -> dict:
    """One measurement in a fresh process (so its peak RSS is this defense's alone)."""
    child = subprocess.run(
        [sys.executable, __file__, *passthrough, "--defense", name, "--impl", impl],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        sys.exit(f"error: measuring {name} ({impl}) failed: {child.stderr.strip().splitlines()[-1:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict], args: argparse.Namespace) -> list[dict]:
    """The result lines of one defense over the repeats (original first): the median step time, and the
    speed-up as the median of the repeats' ratios (each pair measured back to back, so a change of the
    machine's load between repeats cancels out)."""
    lines = {}
    for impl in impls(args):
        times = [run[impl]["ms_per_step"] for run in runs]
        line = runs[0][impl] | {"ms_per_step": round(statistics.median(times), 1)}
        line["images_per_s"] = round(args.batch / line["ms_per_step"] * 1000, 2)
        if args.repeat > 1:
            line["repeats"] = args.repeat
        lines[impl] = line
    if args.original:
        ratios = [run["original"]["ms_per_step"] / run["ours"]["ms_per_step"] for run in runs]
        lines["ours"]["speedup"] = round(statistics.median(ratios), 2)
        if args.repeat > 1:
            lines["ours"]["speedup_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        if args.flops:
            flop_ratio = lines["original"]["gflop_per_step"] / lines["ours"]["gflop_per_step"]
            lines["ours"]["flop_ratio"] = round(flop_ratio, 2)
            lines["ours"]["of_flop_bound"] = round(lines["ours"]["speedup"] / flop_ratio, 2)
    return [lines[impl] for impl in reversed(impls(args))]


if __name__ == "__main__":
    run_main(main)
