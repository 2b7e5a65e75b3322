"""Panels of a model under attack: image | amplified perturbation | clean prediction | attacked prediction |
label. test.py writes one per image for the first ``panels`` images of each attack mode; this script
pictures one image of the test list under the original BIM (2 steps, eps 0.03, step 0.01), attacked and
predicted by the config's protocol (``attack_protocol``, ``eval_crop``; see evaluation/inference.py):

    python -m evaluation.visualize --config config/synthetic/synthetic_pspnet18_sat.yaml --out sat.png \
        [--index 0] [--scale 3] [key value ...]

The perturbation is drawn as ``0.5 + delta / (2 max|delta|)`` per channel: mid-grey is no change.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from attack import BIM
from evaluation.inference import Protocol, WholeImageForward, predict
from model import eval_model_from_config
from util.config import load_config
from util.data.dataset import colorize, load_names_colors, test_data
from util.device import select_device
from util.errors import ArgumentParser, UserError, check_creatable, run_main
from util.log import setup_logging

logger = logging.getLogger(__name__)


def panel_picture(
    image: np.ndarray,
    attacked: np.ndarray,
    clean: np.ndarray,
    prediction: np.ndarray,
    label: np.ndarray,
    colors: np.ndarray,
    attack_name: str,
    scale: int = 3,
) -> np.ndarray:
    """The five panels side by side as an RGB uint8 picture (images 0-255 HxWx3, the rest class maps)."""
    delta = attacked.astype(np.float32) - image.astype(np.float32)
    peak = float(np.abs(delta).max()) or 1.0
    perturbation = np.clip(np.round((0.5 + delta / (2 * peak)) * 255), 0, 255).astype(np.uint8)

    def rgb(gray: np.ndarray) -> np.ndarray:
        return np.asarray(colorize(np.uint8(gray), colors).convert("RGB"))

    return compose(
        [np.clip(np.round(image), 0, 255).astype(np.uint8), perturbation, rgb(clean), rgb(prediction), rgb(label)],
        ["image", f"perturbation (max {peak:.1f}/255)", "clean prediction", f"{attack_name} prediction", "label"],
        scale,
    )


def save_panel(
    path: str | Path,
    image: np.ndarray,
    attacked: np.ndarray,
    clean: np.ndarray,
    prediction: np.ndarray,
    label: np.ndarray,
    colors: np.ndarray,
    attack_name: str,
    scale: int = 3,
) -> None:
    """Write :func:`panel_picture` as a PNG (folders created)."""
    picture = panel_picture(image, attacked, clean, prediction, label, colors, attack_name, scale)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write '{path}'; check the folder and the .png extension")


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
    setup_logging()  # an entry point: the library modules only log
    parser = ArgumentParser(description="Picture a model under the original BIM attack")
    parser.add_argument("--config", required=True, help="YAML config (model_path: the checkpoint)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--index", type=int, default=0, help="image index in test_list")
    parser.add_argument("--scale", type=int, default=3, help="upscaling of the panels")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    args = parser.parse_args()
    cfg = load_config(args.config, args.opts)
    if not cfg.model_path:
        raise UserError("config key 'model_path' is empty; set it to the checkpoint to picture")
    if Path(args.out).suffix.lower() != ".png" or Path(args.out).is_dir():
        raise UserError(f"--out '{args.out}' must name a .png file to write, e.g. --out picture.png")
    check_creatable(str(Path(args.out).parent), "--out's folder")
    if args.scale < 1:
        raise UserError(f"--scale must be >= 1 (screen pixels per image pixel), got {args.scale}")
    data = test_data(cfg)
    if not 0 <= args.index < len(data):
        raise UserError(f"--index {args.index} is outside test_list '{cfg.test_list}' ({len(data)} images)")
    image, label = data.sample(args.index)  # checked: readable, one size, label values in range
    _, colors = load_names_colors(cfg.names_path, cfg.colors_path, cfg.classes)
    device = select_device(cfg.device, cfg.test_gpu)
    model = eval_model_from_config(cfg, device, cfg.model_path)
    protocol = Protocol.from_config(cfg)
    forward = WholeImageForward(model, protocol) if protocol.attack_protocol == "whole_image" else None
    attack = BIM(model, ignore_index=cfg.ignore_label, forward=forward)  # BIM's defaults: the original protocol
    label = protocol.scored_label(label)
    attacked_pred, attacked = predict(model, image, label, protocol, device, attack, return_image=True)
    clean = predict(model, image, label, protocol, device)
    save_panel(args.out, image, attacked, clean, attacked_pred, label, colors, f"BIM (eps {attack.eps})", args.scale)
    logger.info(f"picture written to {args.out}")


if __name__ == "__main__":
    run_main(main)
