"""Time evaluation per image: this code (crops batched) against the original protocol (one crop at a time).

    python tool_bench/eval.py [--images 4] [--attack clean --attack bim] [--threads 2]
    python tool_bench/eval.py --config config/voc2012/voc2012_pspnet50_sat.yaml --model_path exp/.../train_epoch_50.pth

Both run on the same images and checkpoint (default: a random-init PSPNet-18 on freshly generated synthetic
images; with ``--config``, its model and the first images of its ``test_list``). "Ours" is
:func:`evaluation.inference.predict` with ``batch_size_val`` crops per forward and attacks that take input-only
gradients; "original" restates DDC-AT's test script (``tool_test/voc2012/test_voc_psp_ddcat.py``): every
crop alone (batch 1; batch 2 with the flip when clean), its BIM calling ``loss.backward()`` on the model
(parameter gradients included) and ``model.zero_grad()`` each step. Clean predictions must be identical,
attacked ones may differ in at most 0.1 % of the pixels (see MAX_ATTACK_DIFF; the script fails otherwise).
One JSON line per attack: seconds per image of both, the speed-up and the differing pixels.
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

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attack.registry import build_attack
from evaluation.inference import Protocol, crop_windows, predict
from evaluation.specs import ORIGINAL_BIM
from model import eval_model_from_config
from util.config import IMAGENET_MEAN, IMAGENET_STD, load_config
from util.data.dataset import mean_std_255, test_data
from util.device import select_device

# Clean predictions must be identical. Under attack, a gradient component near 0 can change sign between a
# batch of 8 and a batch of 1 (float sums in another order), so a few pixels may differ: at most this share.
MAX_ATTACK_DIFF = 1e-3


def original_bim(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float = 0.03, steps: int = 2, alpha: float = 0.01
) -> torch.Tensor:
    """The original BIM (FGSM steps in normalized space, mean CE, ``loss.backward()`` through the model)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    unnorm = x.detach() * std + mean
    clip_min, clip_max = unnorm - eps, unnorm + eps
    adv = x.detach().clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        model.zero_grad()
        loss = F.cross_entropy(model(adv), target, ignore_index=255)
        loss.backward()
        pixels = adv.detach() * std + mean + alpha * adv.grad.sign()
        pixels = torch.min(torch.max(pixels, clip_min), clip_max).clamp(0.0, 1.0)
        adv = ((pixels - mean) / std).detach()
        model.zero_grad()
    return adv


def original_predict(
    model: nn.Module, image: np.ndarray, label: np.ndarray, protocol: Protocol, device: torch.device, attack: bool
) -> np.ndarray:
    """The original test script's ``test`` / ``scale_process`` / ``net_process`` for one image."""
    mean, std = mean_std_255()
    mean_t = torch.tensor(mean, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, device=device).view(3, 1, 1)
    h, w, _ = image.shape
    prediction = np.zeros((h, w, protocol.classes), dtype=float)
    for scale in protocol.scales:
        new_h, new_w = protocol.scaled_size(h, w, scale)
        image_s = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label_s = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        pad_h, pad_w = max(protocol.crop_h - new_h, 0), max(protocol.crop_w - new_w, 0)
        border = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
        if pad_h > 0 or pad_w > 0:
            image_s = cv2.copyMakeBorder(image_s, *border, cv2.BORDER_CONSTANT, value=mean)
            label_s = cv2.copyMakeBorder(label_s, *border, cv2.BORDER_CONSTANT, value=255)
        full_h, full_w, _ = image_s.shape
        prob = np.zeros((full_h, full_w, protocol.classes), dtype=float)
        count = np.zeros((full_h, full_w), dtype=float)
        for s_h, e_h, s_w, e_w in crop_windows(full_h, full_w, protocol.crop_h, protocol.crop_w):
            crop = torch.from_numpy(image_s[s_h:e_h, s_w:e_w].transpose(2, 0, 1).copy()).float().to(device)
            x = ((crop - mean_t) / std_t).unsqueeze(0)
            target = torch.from_numpy(label_s[s_h:e_h, s_w:e_w].copy()).long().to(device).unsqueeze(0)
            if attack:
                adv = original_bim(model, x, target)
                with torch.no_grad():
                    out = model(adv)
            else:
                with torch.no_grad():
                    out = model(torch.cat([x, x.flip(3)], 0))
            out = F.softmax(out, dim=1)
            out = out[0] if attack else (out[0] + out[1].flip(2)) / 2
            prob[s_h:e_h, s_w:e_w] += out.cpu().numpy().transpose(1, 2, 0)
            count[s_h:e_h, s_w:e_w] += 1
        prob /= count[..., None]
        prob = prob[border[0] : border[0] + new_h, border[2] : border[2] + new_w]
        prediction += cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, protocol.classes)
    return np.argmax(prediction / len(protocol.scales), axis=2)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time evaluation: batched crops vs the original protocol")
    parser.add_argument("--config", default=None, help="YAML config (model and test_list); default: synthetic")
    parser.add_argument("--model_path", default=None, help="checkpoint; default: the config's, or random init")
    parser.add_argument("--images", type=int, default=4, help="number of images timed")
    parser.add_argument("--attack", action="append", choices=["clean", "bim"], help="repeatable; default both")
    parser.add_argument("--size", type=int, default=96, help="synthetic image height (without --config)")
    parser.add_argument("--base_size", type=int, default=128, help="without --config: long side at scale 1")
    parser.add_argument("--layers", type=int, default=18, help="without --config: PSPNet's ResNet depth")
    parser.add_argument("--crop", type=int, default=65, help="without --config: square sliding-window crop")
    parser.add_argument("--batch_size_val", type=int, default=8, help="without --config: crops per forward")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    return parser


def bench_config(args, folder: str):
    """The config to measure: ``--config``, else a tiny synthetic set written to ``folder``."""
    if args.config:
        return load_config(args.config, ["model_path", args.model_path] if args.model_path else [])
    else:
        from tool_data.synthetic import generate

        generate(folder, seed=0, num_train=1, num_val=args.images, size=args.size)
        opts = {
            "data_root": folder,
            "test_list": f"{folder}/list/val.txt",
            "classes": 5,
            "layers": args.layers,
            "base_size": args.base_size,
            "test_h": args.crop,
            "test_w": args.crop,
            "batch_size_val": args.batch_size_val,
            "device": args.device,
        }
        return load_config(None, [str(v) for item in opts.items() for v in item])


def time_both(runs: dict, samples: list, sync) -> tuple[dict, dict]:
    """Seconds per image and predictions of each implementation, alternating so machine load hits both alike."""
    seconds, predictions = dict.fromkeys(runs, 0.0), {impl: [] for impl in runs}
    for run in runs.values():
        run(*samples[0])  # warm-up
    for image, label in samples:
        for impl, run in runs.items():
            sync()
            start = time.perf_counter()
            predictions[impl].append(run(image, label))
            sync()
            seconds[impl] += (time.perf_counter() - start) / len(samples)
    return seconds, predictions


def main() -> None:
    args = get_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    cfg = bench_config(args, tmp.name)
    device = select_device(cfg.device, cfg.test_gpu)
    model = eval_model_from_config(cfg, device, cfg.model_path)
    data = test_data(cfg)
    samples = [data[i] for i in range(min(args.images, len(data)))]
    protocol = Protocol.from_config(cfg)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for name in args.attack or ["clean", "bim"]:
        attack = build_attack(ORIGINAL_BIM, model, cfg.ignore_label) if name == "bim" else None
        runs = {
            "ours": lambda image, label, attack=attack: predict(model, image, label, protocol, device, attack),
            "original": lambda image, label, attack=attack: original_predict(
                model, image, label, protocol, device, attack is not None
            ),
        }
        seconds, predictions = time_both(runs, samples, sync)
        differ = sum(int((a != b).sum()) for a, b in zip(predictions["ours"], predictions["original"]))
        pixels = sum(p.size for p in predictions["ours"])
        if differ > (0 if attack is None else MAX_ATTACK_DIFF * pixels):
            sys.exit(f"error: {name}: predictions differ in {differ} of {pixels} pixels between ours and the original")
        h, w, _ = samples[0][0].shape
        new_h, new_w = protocol.scaled_size(h, w, protocol.scales[0])
        crops = len(protocol.layout(new_h, new_w)[1])
        print(
            json.dumps(
                {
                    "attack": name,
                    "images": len(samples),
                    "crops_first_image": crops,
                    "crop_batch": protocol.crop_batch,
                    "arch": cfg.arch,
                    "layers": cfg.layers,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "original_s_per_image": round(seconds["original"], 4),
                    "ours_s_per_image": round(seconds["ours"], 4),
                    "speedup": round(seconds["original"] / seconds["ours"], 2),
                    "differing_pixels": differ,
                    "pixels": pixels,
                    **(
                        {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                        if device.type == "cuda"
                        else {}
                    ),
                }
            ),
            flush=True,
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
