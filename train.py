"""Train a segmentation network (PSPNet / DeepLabV3), optionally with an adversarial-training defense.

python train.py --config config/synthetic/synthetic_pspnet18.yaml [key value ...]
torchrun --nproc_per_node=N train.py --config ... [key value ...]   # N processes (see util/dist.py)
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from defense import NoDefense, StepResult, StepSettings, build_defense, build_step_settings, resize_target, train_step
from model import check_names, load_checkpoint_weights, model_from_config
from model.checkpoint import (
    CheckpointFolder,
    StopSignal,
    latest_checkpoint,
    restore_rng,
    stale_checkpoints,
    training_state,
)
from util import dist
from util.amp import MixedPrecision, build_amp
from util.config import load_config, save_config
from util.data.loaders import build_loaders
from util.data.sampler import seed_everything
from util.device import select_device
from util.dist import unwrap
from util.errors import ArgumentParser, UserError, check_creatable, run_main
from util.lock import owned
from util.log import format_seconds, setup_logging
from util.metrics import AverageMeter, SegMetric, reduced
from util.optim import build_optimizer, poly_lr, set_bn_momentum, set_lr

logger = setup_logging()


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Robust semantic segmentation: training")
    parser.add_argument("--config", type=str, required=True, help="YAML config file (see config/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    return parser


def prepare_model(model: nn.Module, device: torch.device, sync_bn: bool, channels_last: bool) -> nn.Module:
    """BN over the global batch when several processes train with ``sync_bn``, the device, channels_last."""
    if sync_bn and dist.world_size() > 1:
        model = dist.convert_sync_batchnorm(model, device)
    model.to(device)
    if channels_last:
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        else:
            logger.info("channels_last is for CUDA: ignored on the CPU")
    return model


@dataclass
class Run:
    """What the epoch loop works with."""

    model: nn.Module
    defense: NoDefense
    optimizer: torch.optim.Optimizer
    index_split: int
    device: torch.device
    amp: MixedPrecision
    writer: object
    train_loader: object
    val_loader: object
    settings: StepSettings
    channels_last: bool = False  # batches in channels_last (CUDA only)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.preserve_format


class EpochLog:
    """The meters and the metric of one training epoch, and its progress lines."""

    def __init__(self, cfg: DictConfig, epoch: int, iters: int, max_iter: int) -> None:
        self.cfg, self.epoch, self.iters, self.max_iter = cfg, epoch, iters, max_iter
        self.batch_time, self.data_time = AverageMeter(), AverageMeter()
        self.main, self.aux, self.loss = AverageMeter(), AverageMeter(), AverageMeter()
        self.metric = SegMetric(cfg.classes, cfg.ignore_label)

    def update(self, step: StepResult, n: int) -> None:
        self.metric.update(step.logits.argmax(1), step.target)
        main, aux, loss = torch.stack([step.main_loss, step.aux_loss, step.loss]).tolist()  # one host sync
        self.main.update(main, n)
        self.aux.update(aux, n)
        self.loss.update(loss, n)

    def progress(self, i: int, curr_iter: int, lr: float) -> None:
        """Every ``print_freq`` batches and at the epoch's end: one line of timings, rates and losses."""
        if (i + 1) % self.cfg.print_freq and i + 1 != self.iters:
            return
        remain = (self.max_iter - curr_iter) * self.batch_time.avg
        acc = reduced(self.metric).allacc
        logger.info(
            f"Epoch: [{self.epoch + 1}/{self.cfg.epochs}][{i + 1}/{self.iters}] "
            f"Data {self.data_time.val:.3f} ({self.data_time.avg:.3f}) Batch {self.batch_time.val:.3f} "
            f"({self.batch_time.avg:.3f}) Remain {format_seconds(remain)} LR {lr:.5f} "
            f"MainLoss {self.main.val:.4f} AuxLoss {self.aux.val:.4f} Loss {self.loss.val:.4f} "
            f"Accuracy {acc:.4f}."
        )

    def result(self) -> tuple:
        """(loss, mIoU, mAcc, allAcc) of the epoch over all processes, logged."""
        metric = reduced(self.metric)
        logger.info(
            f"Train result at epoch [{self.epoch + 1}/{self.cfg.epochs}]: "
            f"mIoU/mAcc/allAcc {metric.miou:.4f}/{metric.macc:.4f}/{metric.allacc:.4f}."
        )
        return self.main.avg, metric.miou, metric.macc, metric.allacc


def train_epoch(cfg: DictConfig, run: Run, epoch: int, start: int = 0, after_step=None) -> tuple:
    """One epoch of the single training loop from batch ``start`` on; returns (loss, mIoU, mAcc, allAcc) over
    all processes and whether ``after_step(curr_iter)`` asked to stop early."""
    run.model.train()
    loader = run.train_loader
    loader.batch_sampler.set_epoch(epoch, start)
    max_iter = cfg.iters or cfg.epochs * len(loader)
    warmup = int(cfg.warmup_epochs * len(loader))  # PIR-AT's warm-up iterations: epochs x iterations per epoch
    log = EpochLog(cfg, epoch, len(loader), max_iter)
    end = time.time()
    stopped = False
    for i, (images, target) in enumerate(loader, start):
        log.data_time.update(time.time() - end)
        images = images.to(run.device, non_blocking=True, memory_format=run.memory_format)
        target = target.to(run.device, non_blocking=True)
        curr_iter = epoch * len(loader) + i + 1
        lr = poly_lr(cfg.base_lr, curr_iter - 1, max_iter, cfg.power, cfg.min_lr, warmup, cfg.warmup_ratio)
        set_lr(run.optimizer, lr, run.index_split, cfg.head_lr_mult)
        step = train_step(run.model, run.defense, run.optimizer, images, target, curr_iter, run.amp, run.settings)
        log.update(step, images.size(0) * dist.world_size())
        log.batch_time.update(time.time() - end)
        end = time.time()
        log.progress(i, curr_iter, lr)
        if run.writer is not None:
            run.writer.add_scalar("loss_train_batch", log.main.val, curr_iter)
        if after_step is not None and after_step(curr_iter):
            stopped = True
            break
        if curr_iter >= max_iter:  # iters: the last epoch is cut
            break
    return (*log.result(), stopped)


@torch.no_grad()
def validate(cfg: DictConfig, run: Run) -> tuple:
    """Clean validation on center crops (each process its share of the images); returns (loss, mIoU, mAcc,
    allAcc) over all images."""
    model = unwrap(run.model).eval()
    loss_sum = torch.zeros(2, dtype=torch.float64)  # sum of per-batch loss x images, images
    metric = SegMetric(cfg.classes, cfg.ignore_label)
    criterion = nn.CrossEntropyLoss(ignore_index=cfg.ignore_label)
    for images, target in run.val_loader:
        images, target = images.to(run.device), target.to(run.device)
        with run.amp.autocast():
            logits = model(images)
            target = resize_target(target, tuple(logits.shape[-2:]))
            loss = criterion(logits, target)
        if torch.isfinite(loss):
            loss_sum += torch.tensor([loss.item() * images.size(0), images.size(0)], dtype=torch.float64)
        metric.update(logits.argmax(1), target)
    loss_sum, metric = dist.all_reduce_sum(loss_sum), reduced(metric)
    logger.info(f"Val result: mIoU/mAcc/allAcc {metric.miou:.4f}/{metric.macc:.4f}/{metric.allacc:.4f}.")
    return (loss_sum[0] / loss_sum[1]).item() if loss_sum[1] else 0.0, metric.miou, metric.macc, metric.allacc


def setup_process(cfg: DictConfig) -> torch.device:
    """Join the process group, quiet non-zero ranks, seed."""
    device = dist.setup(
        select_device(cfg.device, cfg.train_gpu),
        cfg.dist_url,
        cfg.world_size,
        cfg.rank,
        cfg.dist_backend,
        cfg.multiprocessing_distributed,
    )
    if not dist.is_main_process():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs
    seed_everything(None if cfg.manual_seed is None else cfg.manual_seed + dist.rank())
    return device


def checkpoint_folder(cfg: DictConfig) -> CheckpointFolder:
    """Under the folder's lock: the checkpoint to resume (``auto_resume``: rank 0's pick for all) and the
    folder, refusing (or, with ``overwrite``, replacing) another run's checkpoints."""
    if cfg.auto_resume and not cfg.resume:  # a restart or a preempted job
        latest = latest_checkpoint(cfg.save_path) if dist.is_main_process() else None
        cfg.resume = dist.broadcast_object(str(latest) if latest else None)
    return CheckpointFolder(cfg.save_path, stale_checkpoints(cfg.save_path, cfg.resume, cfg.overwrite))


def build_training(cfg: DictConfig, device: torch.device, amp: MixedPrecision, ddcat: bool) -> tuple:
    """The model (initial weights, or a resumed checkpoint's), its optimizer and the checkpoint resumed ({} if none)."""
    model = model_from_config(cfg, pretrained=cfg.pretrained and not (cfg.resume or cfg.weight), ddcat=ddcat)
    if cfg.weight:
        load_checkpoint_weights(model, cfg.weight)
        logger.info(f"=> loaded weight '{cfg.weight}'")
    model = prepare_model(model, device, cfg.sync_bn, cfg.channels_last)
    if cfg.backbone_bn_momentum is not None:
        set_bn_momentum(model.backbone_modules(), cfg.backbone_bn_momentum)
    optimizer, index_split = build_optimizer(
        cfg.optimizer,
        model,
        cfg.base_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        sam_rho=cfg.sam_rho,
        sam_adaptive=cfg.sam_adaptive,
        head_mult=cfg.head_lr_mult,
        sam_warmup_separate=cfg.sam_warmup_separate,
    )
    checkpoint = {}
    if cfg.resume:  # every process loads the same checkpoint
        checkpoint = load_resumed(cfg.resume, model, optimizer, amp)
    return model, optimizer, index_split, checkpoint


def load_resumed(path: str, model: nn.Module, optimizer, amp: MixedPrecision) -> dict:
    """A training checkpoint's weights, optimizer and (fp16) scaler state; returns the checkpoint."""
    checkpoint = load_checkpoint_weights(model, path)
    if "optimizer" not in checkpoint or "epoch" not in checkpoint:
        raise UserError(f"resume checkpoint '{path}' has no optimizer/epoch; use it as weight instead")
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as err:
        raise UserError(
            f"resume checkpoint '{path}' holds the optimizer of another run ({err}); resume "
            f"with that run's defense, model and optimizer, or start from it with weight instead of "
            f"resume"
        ) from None
    if amp.scaler.is_enabled() and checkpoint.get("scaler"):
        amp.scaler.load_state_dict(checkpoint["scaler"])
    return checkpoint


def open_writer(cfg: DictConfig):
    """Rank 0: the save folder with the run's config.yaml and a TensorBoard writer; other ranks: None."""
    if not dist.is_main_process():
        return None
    Path(cfg.save_path).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.save_path) / "config.yaml")
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(cfg.save_path))


def log_scalars(writer, split: str, values: tuple, epoch: int) -> None:
    if writer is not None:
        for name, value in zip(("loss", "mIoU", "mAcc", "allAcc"), values, strict=True):
            writer.add_scalar(f"{name}_{split}", value, epoch)


def run_epochs(cfg: DictConfig, run: Run, save, done: int) -> bool:
    """Train from iteration ``done`` to the last epoch with checkpoints and validation; True when stopped early."""
    iters, save_path = len(run.train_loader), Path(cfg.save_path)
    with StopSignal() as stop:

        def after_step(curr_iter: int) -> bool:
            """Iteration checkpoints (the newest kept), and a clean stop on SIGTERM / SIGINT."""
            requested = stop.requested()
            if requested or (cfg.save_every_iters and curr_iter % cfg.save_every_iters == 0):
                save(f"train_iter_{curr_iter}.pth", curr_iter, superseded=save_path.glob("train_iter_*.pth"))
            if requested:
                logger.info(
                    f"stopped by {stop.received or 'another process'} after iteration {curr_iter}: "
                    f"run the same command with auto_resume True (or resume "
                    f"{save_path / f'train_iter_{curr_iter}.pth'}) to continue exactly"
                )
            return requested

        max_iter = cfg.iters or cfg.epochs * iters
        if done >= max_iter:
            logger.info(f"nothing to train: already at iteration {done} of {max_iter}")
            return False
        for epoch in range(done // iters, cfg.epochs):
            start = done % iters if epoch == done // iters else 0
            *train_values, stopped = train_epoch(cfg, run, epoch, start, after_step)
            if stopped:
                return True
            log_scalars(run.writer, "train", train_values, epoch + 1)
            if (epoch + 1) % cfg.save_freq == 0 or epoch + 1 == cfg.epochs:
                save(f"train_epoch_{epoch + 1}.pth", min((epoch + 1) * iters, max_iter))
            if run.val_loader is not None:
                log_scalars(run.writer, "val", validate(cfg, run), epoch + 1)
    return False


def train(cfg: DictConfig, device: torch.device, defense: NoDefense) -> bool:
    """The run on its (locked) save_path: build, resume, train; True when stopped early."""
    folder = checkpoint_folder(cfg)
    amp = build_amp(cfg, device)
    logger.info(
        f"device {device} x {dist.world_size()} processes; arch {cfg.arch}, layers {cfg.layers}, "
        f"classes {cfg.classes}, defense {cfg.defense}, optimizer {cfg.optimizer}, amp {amp.mode}"
    )
    model, optimizer, index_split, checkpoint = build_training(cfg, device, amp, defense.ddcat_heads)
    data_seed = checkpoint.get("data_seed", cfg.manual_seed)
    if data_seed is None:
        data_seed = dist.broadcast_object(random.randrange(2**31))
    train_loader, val_loader = build_loaders(cfg, device, data_seed)
    iters = len(train_loader)
    if cfg.iters:  # VainF's total_itrs: as many epochs as it takes
        cfg.epochs = math.ceil(cfg.iters / iters)
    if int(cfg.warmup_epochs * iters) >= (cfg.iters or cfg.epochs * iters):
        raise UserError(
            f"config: warmup_epochs {cfg.warmup_epochs} ({int(cfg.warmup_epochs * iters)} iterations of {iters} per "
            f"epoch) leaves no iteration of the {cfg.iters or cfg.epochs * iters} for the poly schedule; shorten it"
        )
    done = int(checkpoint.get("iteration", checkpoint.get("epoch", cfg.start_epoch) * iters))
    if cfg.resume:
        restore_rng(checkpoint, cfg.resume)
        logger.info(
            f"=> resumed '{cfg.resume}' after iteration {done} (epoch {done // iters}, batch {done % iters} of {iters})"
        )
    model = dist.wrap(model, device)

    def save(name: str, iteration: int, superseded: Iterable[Path] = ()) -> Path:
        state = training_state(model, optimizer, amp.scaler, iteration, iters, data_seed, OmegaConf.to_container(cfg))
        return folder.save(state, name, superseded)

    writer = open_writer(cfg)
    channels_last = cfg.channels_last and device.type == "cuda"
    settings = build_step_settings(cfg)
    run = Run(
        model, defense, optimizer, index_split, device, amp, writer, train_loader, val_loader, settings, channels_last
    )
    stopped = run_epochs(cfg, run, save, done)
    if writer is not None:
        writer.close()
    dist.barrier()  # the last checkpoint is on disk before any process reports success
    return stopped


def main() -> None:
    cv2.setNumThreads(0)  # as semseg: DataLoader workers (forked from here) resize and warp single-threaded
    cv2.ocl.setUseOpenCL(False)
    args = get_parser().parse_args()
    cfg = load_config(args.config, args.opts)
    check_names(cfg, f"config '{args.config}'")  # arch/backbone/model: the registries of model/
    defense = build_defense(cfg)  # an unknown defense: one line, before anything is written
    check_creatable(cfg.save_path, "save_path")
    device = setup_process(cfg)
    # The lock comes before anything reads save_path: a run started twice on one folder is refused, not raced.
    with owned(cfg.save_path, "save_path", dist.is_main_process()):
        stopped = train(cfg, device, defense)
    dist.cleanup()
    if not stopped:
        logger.info("==> Training done.")


if __name__ == "__main__":
    run_main(main)
