"""Evaluate a segmentation model: clean, under the original BIM attack (``--attack``), or clean and under
every attack of the config's ``attacks`` list.

    python test.py --config config/synthetic/synthetic_pspnet18.yaml [--attack] [key value ...]

Clean results go to save_folder (gray/, color/, results.json); the original BIM's to save_folder/bim/;
each ``attacks`` entry and eps to save_folder/<name>_eps<eps>/, with one row each in
save_folder/results.csv and a table in the log.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from attack.base import Attack
from attack.registry import build_attack, parse_specs
from attack.transfer import Transfer
from model import build_model, load_checkpoint_weights
from util.config import load_config
from util.dataset import SemData, colorize, load_names_colors, read_label
from util.device import select_device
from util.errors import UserError, run_main
from util.inference import Protocol, WholeImageForward, predict
from util.log import setup_logging
from util.metrics import SegMetric
from util.visualize import save_panel

logger = setup_logging()


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Robust semantic segmentation: evaluation")
    parser.add_argument("--config", type=str, required=True, help="YAML config file (see config/)")
    parser.add_argument("--attack", action="store_true", help="evaluate under the original BIM attack "
                                                               "(2 steps, eps 0.03, step 0.01, per crop)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    return parser


def image_name(path: str) -> str:
    """Prediction file stem, as the original names it."""
    return os.path.basename(path).split(".")[0]


def _first(batch: list):
    return batch[0]


# The original DDC-AT evaluation attack (``--attack``): BIM, 2 steps, eps 0.03, step 0.01, on each crop.
ORIGINAL_BIM = {"name": "bim", "label": "bim", "eps": 0.03, "steps": 2, "alpha": 0.01, "protocol": "per_crop"}


def load_model(cfg: DictConfig, device: torch.device | None = None) -> tuple[torch.nn.Module, torch.device]:
    """The model of ``model_path`` on ``device`` (default: the configured one), in eval mode."""
    if not cfg.model_path:
        raise UserError("config key 'model_path' is empty; set it to the checkpoint to evaluate")
    device = device or select_device(cfg.device, cfg.test_gpu)
    model = build_model(cfg.arch, cfg.layers, cfg.classes, backbone=cfg.backbone, zoom_factor=cfg.zoom_factor,
                        output_stride=cfg.output_stride, pretrained=False)
    load_checkpoint_weights(model, cfg.model_path)
    model.to(device).eval()
    logger.info(f"=> loaded checkpoint '{cfg.model_path}' on {device}")
    return model, device


def load_source_model(cfg: DictConfig, spec: dict, device: torch.device) -> torch.nn.Module:
    """The source model of a transfer attack spec, from its own config and checkpoint, on ``device``."""
    source = spec["source"]
    source_cfg = load_config(source["config"], ["model_path", source["model_path"]] if source["model_path"] else [])
    if source_cfg.classes != cfg.classes:
        raise UserError(f"attack '{spec['label']}': source config '{source['config']}' has classes "
                        f"{source_cfg.classes}, the evaluated model {cfg.classes}; a source must share the labels")
    return load_model(source_cfg, device)[0]


def make_attack(cfg: DictConfig, spec: dict | None, model: torch.nn.Module, device: torch.device,
                protocol: Protocol) -> Attack | None:
    """The attack of one spec: on ``model``, or on the spec's source model wrapped in :class:`Transfer`;
    for ``whole_image`` through the differentiable inference of the model it is crafted on."""
    if spec is None:
        return None
    source = load_source_model(cfg, spec, device) if spec.get("source") else model
    forward = WholeImageForward(source, protocol) if protocol.attack_protocol == "whole_image" else None
    attack = build_attack(spec, source, cfg.ignore_label, forward=forward)
    return Transfer(model, attack, cfg.ignore_label) if source is not model else attack


def run_inference(cfg: DictConfig, data: SemData, model: torch.nn.Module, device: torch.device,
                  attack_spec: dict | None, gray_folder: Path, color_folder: Path, colors: np.ndarray,
                  metric: SegMetric) -> None:
    """Predict every image, save gray/color maps (and panels of the first ``panels`` attacked images), and
    accumulate metrics against the labels. A spec's ``protocol`` (the original BIM's) overrides the config's."""
    protocol = Protocol.from_config(cfg)
    if attack_spec is not None:
        protocol = dataclasses.replace(protocol, attack_protocol=attack_spec.get("protocol", cfg.attack_protocol))
    attack = make_attack(cfg, attack_spec, model, device, protocol)
    gray_folder.mkdir(parents=True, exist_ok=True)
    color_folder.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, num_workers=cfg.workers,
                                         collate_fn=_first)
    desc = attack_spec["label"] if attack_spec else "clean"
    for i, (image, label) in enumerate(tqdm(loader, desc=desc, unit="img", dynamic_ncols=True)):
        label = protocol.scored_label(label)
        name = image_name(data.data_list[i][0])
        if attack is not None and i < cfg.panels:
            prediction, attacked = predict(model, image, label, protocol, device, attack, return_image=True)
            clean = predict(model, image, label, protocol, device)
            save_panel(gray_folder.parent / "panels" / f"{name}.png", image, attacked, clean, prediction, label,
                       colors, desc)
        else:
            prediction = predict(model, image, label, protocol, device, attack)
        gray = np.uint8(prediction)
        cv2.imwrite(str(gray_folder / f"{name}.png"), gray)
        colorize(gray, colors).save(str(color_folder / f"{name}.png"))
        if cfg.split != "test":
            metric.update(gray, label)


def metrics_from_predictions(cfg: DictConfig, data: SemData, gray_folder: Path, metric: SegMetric) -> None:
    """has_prediction: read saved gray predictions and score them."""
    for image_path, label_path in data.data_list:
        pred_path = gray_folder / f"{image_name(image_path)}.png"
        pred = cv2.imread(str(pred_path), cv2.IMREAD_GRAYSCALE)
        if pred is None:
            raise UserError(f"has_prediction is True but '{pred_path}' is missing; set has_prediction False")
        metric.update(pred, Protocol.from_config(cfg).scored_label(read_label(label_path)))


def evaluate(cfg: DictConfig, data: SemData, attack_spec: dict | None, names: list[str], colors: np.ndarray,
             model_loader) -> dict | None:
    """One evaluation mode (clean or one attack): predictions, log lines, results.json; the result dict."""
    label = attack_spec["label"] if attack_spec else None
    save_folder = Path(cfg.save_folder) / label if label else Path(cfg.save_folder)
    gray_folder, color_folder = save_folder / "gray", save_folder / "color"
    metric = SegMetric(cfg.classes, cfg.ignore_label)
    start = time.time()
    logger.info(f">>>>>>>>>>>>>>>> Start Evaluation ({label or 'clean'}, {len(data)} images) >>>>>>>>>>>>>>>>")
    if cfg.has_prediction:
        metrics_from_predictions(cfg, data, gray_folder, metric)
    else:
        run_inference(cfg, data, *model_loader(), attack_spec, gray_folder, color_folder, colors, metric)
    logger.info("<<<<<<<<<<<<<<<<< End Evaluation <<<<<<<<<<<<<<<<<")
    if cfg.split == "test":
        logger.info(f"predictions written to {gray_folder} (split 'test' has no labels: no metrics)")
        return None
    for i, name in enumerate(names):
        logger.info(f"Class_{i} result: iou/accuracy {metric.iou_class[i]:.4f}/{metric.acc_class[i]:.4f}, "
                    f"name: {name}.")
    logger.info(f"Eval result: mIoU/mAcc/allAcc {metric.miou:.4f}/{metric.macc:.4f}/{metric.allacc:.4f}.")
    result = {
        "mode": label or "clean",
        "attack": attack_spec,
        "mIoU": metric.miou, "mAcc": metric.macc, "allAcc": metric.allacc,
        "classes": [{"name": n, "iou": float(metric.iou_class[i]), "acc": float(metric.acc_class[i])}
                    for i, n in enumerate(names)],
        "images": len(data), "model_path": cfg.model_path, "seconds": round(time.time() - start, 2),
        "config": OmegaConf.to_container(cfg),
    }
    save_folder.mkdir(parents=True, exist_ok=True)
    (save_folder / "results.json").write_text(json.dumps(result, indent=2))
    return result


def write_summary(results: list[dict], save_folder: Path) -> None:
    """One row per mode: a table in the log and save_folder/results.csv."""
    rows = [(r["mode"], r["attack"]["eps"] if r["attack"] else 0.0, r["mIoU"], r["mAcc"], r["allAcc"])
            for r in results]
    logger.info("| mode | eps | mIoU | mAcc | allAcc |")
    for mode, eps, miou, macc, allacc in rows:
        logger.info(f"| {mode} | {eps * 255:.2f}/255 | {miou:.4f} | {macc:.4f} | {allacc:.4f} |")
    lines = ["mode,eps,mIoU,mAcc,allAcc"] + [f"{m},{e:.6f},{a:.6f},{b:.6f},{c:.6f}" for m, e, a, b, c in rows]
    (save_folder / "results.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = get_parser().parse_args()
    cfg = load_config(args.config, args.opts)
    specs = [ORIGINAL_BIM] if args.attack else [None, *parse_specs(cfg.attacks)]
    if any(specs) and cfg.split == "test":
        raise UserError("an attack needs labels, but split is 'test'; evaluate a labelled split (val)")
    names, colors = load_names_colors(cfg.names_path, cfg.colors_path, cfg.classes)
    data = SemData(cfg.split, cfg.data_root, cfg.test_list, None, cfg.classes, cfg.ignore_label)
    index_end = len(data.data_list) if cfg.index_step == 0 else min(cfg.index_start + cfg.index_step,
                                                                     len(data.data_list))
    data.data_list = data.data_list[cfg.index_start:index_end]
    if not data.data_list:
        raise UserError(f"no images to evaluate in '{cfg.test_list}' with index_start {cfg.index_start}")

    model_loader = functools.cache(lambda: load_model(cfg))  # not loaded at all with has_prediction
    results = [evaluate(cfg, data, spec, names, colors, model_loader) for spec in specs]
    if len(results) > 1 and all(results):
        write_summary(results, Path(cfg.save_folder))


if __name__ == "__main__":
    run_main(main)
