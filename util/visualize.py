"""Picture one model under the original BIM attack: image | perturbation | clean prediction | attacked
prediction | label, for one image of the test list.

    python -m util.visualize --config config/synthetic/synthetic_pspnet18_sat.yaml --out sat.png \
        [--index 0] [--scale 3] [key value ...]

The whole image is attacked at once (BIM, 2 steps, eps 0.03, step 0.01, against its label). The
perturbation is drawn as ``0.5 + delta / (2 eps)`` per channel: mid-grey is no change.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from attack import BIM
from model import build_model, load_checkpoint_weights
from util.config import load_config
from util.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    colorize,
    load_names_colors,
    make_dataset,
    read_image,
    read_label,
)
from util.device import select_device
from util.errors import UserError, run_main
from util.log import setup_logging

logger = setup_logging()
EPS, STEPS, ALPHA = 0.03, 2, 0.01


def panels(model: torch.nn.Module, image: np.ndarray, label: np.ndarray, device: torch.device,
           ignore_label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, perturbation) as HxWx3 uint8 and (clean, attacked) predictions as HxW class maps."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x01 = torch.from_numpy(image / 255.0).float().permute(2, 0, 1).unsqueeze(0).to(device)
    x = (x01 - mean) / std
    target = torch.from_numpy(label.astype(np.int64)).unsqueeze(0).to(device)
    model.eval()
    adv = BIM(model, eps=EPS, steps=STEPS, alpha=ALPHA, ignore_index=ignore_label)(x, target)
    with torch.no_grad():
        clean_pred = model(x).argmax(1)[0]
        adv_pred = model(adv).argmax(1)[0]
    delta = (adv * std + mean - x01)[0].permute(1, 2, 0)
    perturbation = ((0.5 + delta / (2 * EPS)).clamp(0, 1) * 255).round().byte()
    return (image.astype(np.uint8), perturbation.cpu().numpy(), clean_pred.cpu().numpy(),
            adv_pred.cpu().numpy())


def compose(images: list[np.ndarray], titles: list[str], scale: int) -> np.ndarray:
    """Side by side (RGB), upscaled ``scale`` x with nearest neighbours, a title above each."""
    gap, band = 6, 22
    tiles = []
    for image, title in zip(images, titles):
        big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        head = np.full((band, big.shape[1], 3), 255, np.uint8)
        cv2.putText(head, title, (4, band - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles += [np.vstack([head, big]), np.full((band + big.shape[0], gap, 3), 255, np.uint8)]
    return np.hstack(tiles[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Picture a model under the original BIM attack")
    parser.add_argument("--config", required=True, help="YAML config (model_path: the checkpoint)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--index", type=int, default=0, help="image index in test_list")
    parser.add_argument("--scale", type=int, default=3, help="upscaling of the panels")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    args = parser.parse_args()
    cfg = load_config(args.config, args.opts)
    if not cfg.model_path:
        raise UserError("config key 'model_path' is empty; set it to the checkpoint to picture")
    items = make_dataset("val", cfg.data_root, cfg.test_list)
    if not 0 <= args.index < len(items):
        raise UserError(f"--index {args.index} is outside test_list '{cfg.test_list}' ({len(items)} images)")
    image_path, label_path = items[args.index]
    _, colors = load_names_colors(cfg.names_path, cfg.colors_path, cfg.classes)
    device = select_device(cfg.device, cfg.test_gpu)
    model = build_model(cfg.arch, cfg.layers, cfg.classes, backbone=cfg.backbone,
                        zoom_factor=8, output_stride=cfg.output_stride).to(device)
    load_checkpoint_weights(model, cfg.model_path)
    image, label = read_image(image_path), read_label(label_path)
    image_u8, perturbation, clean, attacked = panels(model, image, label, device, cfg.ignore_label)

    def rgb(gray: np.ndarray) -> np.ndarray:
        return np.asarray(colorize(gray, colors).convert("RGB"))

    picture = compose([image_u8, perturbation, rgb(clean), rgb(attacked), rgb(label)],
                      ["image", f"perturbation (eps {EPS})", "clean prediction", "BIM prediction", "label"],
                      args.scale)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.out, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write '{args.out}'; check the folder and the .png extension")
    logger.info(f"picture written to {args.out}")


if __name__ == "__main__":
    run_main(main)
