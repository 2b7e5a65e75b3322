"""Time the strong attacks per image, as test.py runs them (crops of an image batched, per_crop protocol).

    python tool_bench/attack.py [--attack apgd --attack sea] [--images 4] [--steps 300] [--eps 8] [--threads 2]
    python tool_bench/attack.py --config config/synthetic/synthetic_pspnet18_sat.yaml \\
        --model_path exp/synthetic/demo_sat/model/train_epoch_6.pth --images 10

SEA and APGD with balanced masked CE take the class table as test.py does (the training labels' where train_list
exists, per-image weights otherwise). Default model: a random-init PSPNet-18 on freshly generated synthetic images
(an undefended random model is fooled at once, so early stopping makes it cheap: give a trained checkpoint for
realistic figures). One JSON line per attack: seconds per image, and the crops that went through the model
(forward passes x crops) per image beside the budget (crops x iterations): the share that early stopping saved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from attack.registry import build_attack, parse_specs
from evaluation.inference import Protocol, predict
from evaluation.specs import resolve_class_weights
from model import eval_model_from_config
from util.config import load_config
from util.data.dataset import test_data
from util.device import select_device
from util.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time APGD and SEA per image")
    parser.add_argument("--config", default=None, help="YAML config (model and test_list); default: synthetic")
    parser.add_argument("--model_path", default=None, help="checkpoint; default: the config's, or random init")
    parser.add_argument("--attack", action="append", choices=["apgd", "sea"], help="repeatable; default both")
    parser.add_argument("--images", type=int, default=4, help="number of images timed")
    parser.add_argument("--steps", type=int, default=300, help="iterations (per loss for SEA)")
    parser.add_argument("--eps", type=float, default=8.0, help="L-inf radius in 1/255")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    return parser


def bench_config(args, folder: str):
    """The config to measure: ``--config``, else a synthetic set (with a train list for SEA's class table) in
    ``folder``."""
    if args.config:
        return load_config(args.config, ["model_path", args.model_path] if args.model_path else [])
    else:
        from tool_data.synthetic import generate

        generate(folder, seed=0, num_train=20, num_val=args.images, size=96)
        opts = {
            "data_root": folder,
            "train_list": f"{folder}/list/train.txt",
            "test_list": f"{folder}/list/val.txt",
            "classes": 5,
            "layers": 18,
            "base_size": 120,
            "test_h": 97,
            "test_w": 97,
            "device": args.device,
        }
        return load_config(None, [str(v) for item in opts.items() for v in item])


def main() -> None:
    setup_logging()  # the class table's line, as test.py logs it
    args = get_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    cfg = bench_config(args, tmp.name)
    device = select_device(cfg.device, cfg.test_gpu)
    torch.manual_seed(0)
    model = eval_model_from_config(cfg, device, cfg.model_path)
    crops_seen = [0]
    model.register_forward_pre_hook(lambda _, inputs: crops_seen.__setitem__(0, crops_seen[0] + len(inputs[0])))
    data = test_data(cfg)
    samples = [data[i] for i in range(min(args.images, len(data)))]
    protocol = Protocol.from_config(cfg)
    for name in args.attack or ["apgd", "sea"]:
        (spec,) = resolve_class_weights(cfg, parse_specs([{"name": name, "eps": args.eps, "steps": args.steps}]))
        attack = build_attack(spec, model, cfg.ignore_label)
        torch.manual_seed(0)
        crops_seen[0], crops = 0, 0
        start = time.perf_counter()
        for image, label in samples:
            predict(model, image, label, protocol, device, attack)
            h, w, _ = image.shape
            crops += sum(len(protocol.layout(*protocol.scaled_size(h, w, s))[1]) for s in protocol.scales)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        budget = crops * args.steps * max(1, len(spec.attack_class.members(spec.params)))
        print(
            json.dumps(
                {
                    "attack": name,
                    "eps": args.eps,
                    "steps": args.steps,
                    "images": len(samples),
                    "arch": cfg.arch,
                    "layers": cfg.layers,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "s_per_image": round(seconds / len(samples), 3),
                    "crops_through_model_per_image": round(crops_seen[0] / len(samples), 1),
                    "budget_per_image": round(budget / len(samples), 1),
                }
            ),
            flush=True,
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
