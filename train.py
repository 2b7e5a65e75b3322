"""Train a segmentation network (PSPNet / DeepLabV3), optionally with an adversarial-training defense.

    python train.py --config config/synthetic/synthetic_pspnet18.yaml [key value ...]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from model import build_model, load_checkpoint_weights
from util import transform
from util.config import load_config, save_config
from util.dataset import SemData, mean_std_255
from util.defense import StepResult, TrainingAttack, build_defense, resize_target
from util.device import select_device
from util.errors import UserError, run_main
from util.log import format_seconds, setup_logging
from util.metrics import AverageMeter, SegMetric
from util.optim import SAM, build_optimizer, frozen_bn_stats, poly_lr, set_lr

logger = setup_logging()


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Robust semantic segmentation: training")
    parser.add_argument("--config", type=str, required=True, help="YAML config file (see config/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    return parser


def seed_everything(seed: int | None) -> None:
    """Seed python, numpy and torch (data workers derive their seeds from torch's)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_loaders(cfg: DictConfig, device: torch.device) -> tuple:
    """semseg's training augmentation and the center-crop validation loader."""
    mean, std = mean_std_255()
    crop = [cfg.train_h, cfg.train_w]
    train_transform = transform.Compose([
        transform.RandScale([cfg.scale_min, cfg.scale_max]),
        transform.RandRotate([cfg.rotate_min, cfg.rotate_max], padding=mean, ignore_label=cfg.ignore_label),
        transform.RandomGaussianBlur(),
        transform.RandomHorizontalFlip(),
        transform.Crop(crop, crop_type="rand", padding=mean, ignore_label=cfg.ignore_label),
        transform.ToTensor(),
        transform.Normalize(mean=mean, std=std)])
    train_data = SemData("train", cfg.data_root, cfg.train_list, train_transform, cfg.classes, cfg.ignore_label)
    if len(train_data) < cfg.batch_size:
        raise UserError(f"train_list '{cfg.train_list}' has {len(train_data)} images, fewer than "
                        f"batch_size {cfg.batch_size}; lower batch_size")
    generator = torch.Generator()
    if cfg.manual_seed is not None:
        generator.manual_seed(cfg.manual_seed)
    pin = device.type == "cuda"
    train_loader = torch.utils.data.DataLoader(
        train_data, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers, pin_memory=pin,
        drop_last=True, generator=generator, persistent_workers=cfg.workers > 0)
    val_loader = None
    if cfg.evaluate:
        val_transform = transform.Compose([
            transform.Crop(crop, crop_type="center", padding=mean, ignore_label=cfg.ignore_label),
            transform.ToTensor(),
            transform.Normalize(mean=mean, std=std)])
        val_data = SemData("val", cfg.data_root, cfg.val_list, val_transform, cfg.classes, cfg.ignore_label)
        val_loader = torch.utils.data.DataLoader(val_data, batch_size=cfg.batch_size_val, shuffle=False,
                                                 num_workers=cfg.workers, pin_memory=pin)
    return train_loader, val_loader


def check_save_path(cfg: DictConfig) -> None:
    """Refuse to mix checkpoints of two runs in one folder (nothing on disk gets overwritten)."""
    existing = sorted(Path(cfg.save_path).glob("train_epoch_*.pth"))
    if existing and not cfg.resume and not cfg.overwrite:
        raise UserError(f"save_path '{cfg.save_path}' already holds checkpoints ({existing[0].name}, ...); "
                        f"set resume to continue, choose another save_path, or set overwrite True")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_step(cfg, model, defense, optimizer, images, target, curr_iter: int) -> StepResult:
    """One update: the defense builds the batch, then SGD/Adam step, or SAM's two passes on that batch."""
    batch = defense.make_batch(model, images, target)
    step = defense.loss(model, batch)
    if not torch.isfinite(step.loss):
        raise UserError(f"loss became {step.loss.item()} at iteration {curr_iter}; lower base_lr "
                        f"(the last saved checkpoint in '{cfg.save_path}' is intact)")
    optimizer.zero_grad(set_to_none=True)
    step.loss.backward()
    if isinstance(optimizer, SAM) and curr_iter > cfg.sam_warmup_iters:
        optimizer.ascend()
        optimizer.zero_grad(set_to_none=True)
        with frozen_bn_stats(model):
            defense.loss(model, batch).loss.backward()
        optimizer.descend()
    else:
        optimizer.step()
    return step


def train_epoch(cfg, loader, model, defense, optimizer, index_split, epoch, device, writer=None) -> tuple:
    """One epoch of the single training loop; returns (loss, mIoU, mAcc, allAcc)."""
    model.train()
    batch_time, data_time = AverageMeter(), AverageMeter()
    main_meter, aux_meter, loss_meter = AverageMeter(), AverageMeter(), AverageMeter()
    metric = SegMetric(cfg.classes, cfg.ignore_label)
    max_iter = cfg.epochs * len(loader)
    end = time.time()
    for i, (images, target) in enumerate(loader):
        data_time.update(time.time() - end)
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        curr_iter = epoch * len(loader) + i + 1
        lr = poly_lr(cfg.base_lr, curr_iter - 1, max_iter, cfg.power)
        set_lr(optimizer, lr, index_split)
        step = train_step(cfg, model, defense, optimizer, images, target, curr_iter)

        n = images.size(0)
        metric.update(step.logits.argmax(1), step.target)
        main_meter.update(step.main_loss.item(), n)
        aux_meter.update(step.aux_loss.item(), n)
        loss_meter.update(step.loss.item(), n)
        batch_time.update(time.time() - end)
        end = time.time()
        if (i + 1) % cfg.print_freq == 0 or i + 1 == len(loader):
            remain = (max_iter - curr_iter) * batch_time.avg
            acc = metric.allacc
            logger.info(f"Epoch: [{epoch + 1}/{cfg.epochs}][{i + 1}/{len(loader)}] "
                        f"Data {data_time.val:.3f} ({data_time.avg:.3f}) Batch {batch_time.val:.3f} "
                        f"({batch_time.avg:.3f}) Remain {format_seconds(remain)} LR {lr:.5f} "
                        f"MainLoss {main_meter.val:.4f} AuxLoss {aux_meter.val:.4f} Loss {loss_meter.val:.4f} "
                        f"Accuracy {acc:.4f}.")
        if writer is not None:
            writer.add_scalar("loss_train_batch", main_meter.val, curr_iter)
    logger.info(f"Train result at epoch [{epoch + 1}/{cfg.epochs}]: "
                f"mIoU/mAcc/allAcc {metric.miou:.4f}/{metric.macc:.4f}/{metric.allacc:.4f}.")
    return main_meter.avg, metric.miou, metric.macc, metric.allacc


@torch.no_grad()
def validate(cfg, loader, model, device) -> tuple:
    """Clean validation on center crops; returns (loss, mIoU, mAcc, allAcc)."""
    model.eval()
    loss_meter = AverageMeter()
    metric = SegMetric(cfg.classes, cfg.ignore_label)
    criterion = nn.CrossEntropyLoss(ignore_index=cfg.ignore_label)
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        logits = model(images)
        target = resize_target(target, tuple(logits.shape[-2:]))
        loss = criterion(logits, target)
        if torch.isfinite(loss):
            loss_meter.update(loss.item(), images.size(0))
        metric.update(logits.argmax(1), target)
    logger.info(f"Val result: mIoU/mAcc/allAcc {metric.miou:.4f}/{metric.macc:.4f}/{metric.allacc:.4f}.")
    return loss_meter.avg, metric.miou, metric.macc, metric.allacc


def main() -> None:
    args = get_parser().parse_args()
    cfg = load_config(args.config, args.opts)
    check_save_path(cfg)
    seed_everything(cfg.manual_seed)
    device = select_device(cfg.device, cfg.train_gpu)
    logger.info(f"device {device}; arch {cfg.arch}, layers {cfg.layers}, classes {cfg.classes}, "
                f"defense {cfg.defense}, optimizer {cfg.optimizer}")

    train_loader, val_loader = build_loaders(cfg, device)
    model = build_model(cfg.arch, cfg.layers, cfg.classes, backbone=cfg.backbone, zoom_factor=cfg.zoom_factor,
                        output_stride=cfg.output_stride, pretrained=cfg.pretrained and not (cfg.resume or cfg.weight),
                        init_path=cfg.init_path, ddcat=cfg.defense == "ddcat")
    if cfg.weight:
        load_checkpoint_weights(model, cfg.weight)
        logger.info(f"=> loaded weight '{cfg.weight}'")
    model.to(device)
    optimizer, index_split = build_optimizer(cfg.optimizer, model, cfg.base_lr, cfg.momentum, cfg.weight_decay,
                                             cfg.sam_rho, cfg.sam_adaptive)
    start_epoch = cfg.start_epoch
    if cfg.resume:
        checkpoint = load_checkpoint_weights(model, cfg.resume)
        if "optimizer" not in checkpoint or "epoch" not in checkpoint:
            raise UserError(f"resume checkpoint '{cfg.resume}' has no optimizer/epoch; use it as weight instead")
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch = int(checkpoint["epoch"])
        logger.info(f"=> resumed '{cfg.resume}' at epoch {start_epoch}")
    attack = TrainingAttack(cfg.adv_eps, cfg.adv_steps, cfg.adv_step_size, cfg.adv_random_start)
    defense = build_defense(cfg.defense, cfg.aux_weight, cfg.ignore_label, attack)

    save_path = Path(cfg.save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, save_path / "config.yaml")
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(save_path))
    for epoch in range(start_epoch, cfg.epochs):
        loss, miou, macc, allacc = train_epoch(cfg, train_loader, model, defense, optimizer, index_split,
                                               epoch, device, writer)
        epoch_log = epoch + 1
        for name, value in (("loss", loss), ("mIoU", miou), ("mAcc", macc), ("allAcc", allacc)):
            writer.add_scalar(f"{name}_train", value, epoch_log)
        if epoch_log % cfg.save_freq == 0 or epoch_log == cfg.epochs:
            filename = save_path / f"train_epoch_{epoch_log}.pth"
            save_checkpoint({"epoch": epoch_log, "state_dict": model.state_dict(),
                             "optimizer": optimizer.state_dict()}, filename)
            logger.info(f"Saving checkpoint to: {filename}")
        if val_loader is not None:
            loss, miou, macc, allacc = validate(cfg, val_loader, model, device)
            for name, value in (("loss", loss), ("mIoU", miou), ("mAcc", macc), ("allAcc", allacc)):
                writer.add_scalar(f"{name}_val", value, epoch_log)
    writer.close()
    logger.info("==> Training done.")


if __name__ == "__main__":
    run_main(main)
