"""The training and validation loaders of a config: semseg's augmentation, this process's share of the data."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from util import dist
from util.data import transform
from util.data.dataset import SemData, mean_std_255
from util.data.sampler import EpochSeeded, ResumableBatchSampler
from util.errors import UserError


def per_process(cfg: DictConfig) -> tuple[int, int]:
    """(batch_size_val, workers) of this process: the config's are global, split as the original (the
    training batch is dealt by the sampler, once batch_size is checked to divide)."""
    world = dist.world_size()
    if cfg.batch_size % world:
        raise UserError(
            f"config key 'batch_size' ({cfg.batch_size}) is the global batch and must divide by the "
            f"{world} processes; choose a multiple of {world}"
        )
    return math.ceil(cfg.batch_size_val / world), math.ceil(cfg.workers / world)


def augmentation(cfg: DictConfig) -> list:
    """The training augmentation: semseg's (scale, rotate, blur, flip, crop padded with the mean / ignore_label),
    VainF's (scale, crop padded as VainF's, flip; SAM-AT's) or PIR-AT's (flip, short-side scale, pad, blur, crop)."""
    crop = [cfg.train_h, cfg.train_w]
    if cfg.augmentation == "pirat":
        return [transform.PIRATRandomScaleCrop(cfg.train_base_size, crop, [cfg.scale_min, cfg.scale_max])]
    if cfg.augmentation == "vainf":
        return [
            transform.VainFRandomScale([cfg.scale_min, cfg.scale_max]),
            transform.VainFRandomCrop(crop),
            transform.RandomHorizontalFlip(),
        ]
    mean, _ = mean_std_255(cfg.mean, cfg.std)
    return [
        transform.RandScale([cfg.scale_min, cfg.scale_max]),
        transform.RandRotate([cfg.rotate_min, cfg.rotate_max], padding=mean, ignore_label=cfg.ignore_label),
        transform.RandomGaussianBlur(),
        transform.RandomHorizontalFlip(),
        transform.Crop(crop, crop_type="rand", padding=mean, ignore_label=cfg.ignore_label),
    ]


def build_loaders(cfg: DictConfig, device: torch.device, data_seed: int) -> tuple:
    """The training augmentation and the center-crop validation loader, this process's share of each.

    Training batches depend only on (data_seed, epoch, position) (util/data/sampler.py): each epoch's permutation
    is cut into global batches, of which rank r takes the images r, r + N, ..., and every image's random
    augmentation is seeded by (data_seed, epoch, image), so a run resumes mid-epoch exactly and the data do
    not depend on the number of workers. Validation images are dealt r, r + N, ... as well.
    """
    mean, std = mean_std_255(cfg.mean, cfg.std)
    batch_size_val, workers = per_process(cfg)
    train_transform = transform.Compose([*augmentation(cfg), transform.ToTensor(), transform.Normalize(mean, std)])
    train_data = SemData(
        "train",
        cfg.data_root,
        cfg.train_list,
        train_transform,
        cfg.classes,
        cfg.ignore_label,
        cfg.rescale_normalized_input,
    )
    train_data.check_samples()
    if len(train_data) < cfg.batch_size:
        raise UserError(
            f"train_list '{cfg.train_list}' has {len(train_data)} images, fewer than "
            f"batch_size {cfg.batch_size}; lower batch_size"
        )
    sampler = ResumableBatchSampler(len(train_data), cfg.batch_size, data_seed, dist.rank(), dist.world_size())
    pin = device.type == "cuda"
    # Own generators: creating a loader's iterator must not draw from the global RNG that a checkpoint restores.
    train_loader = torch.utils.data.DataLoader(
        EpochSeeded(train_data, data_seed),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(data_seed + dist.rank()),
        persistent_workers=workers > 0,
    )
    val_loader = _val_loader(cfg, batch_size_val, workers, pin, data_seed) if cfg.evaluate else None
    return train_loader, val_loader


def _val_loader(cfg: DictConfig, batch_size: int, workers: int, pin: bool, data_seed: int):
    """The center-crop validation loader of this process: images r, r + N, ... (no padding: each scored once)."""
    mean, std = mean_std_255(cfg.mean, cfg.std)
    crop = [cfg.train_h, cfg.train_w]
    val_transform = transform.Compose(
        [
            transform.Crop(crop, crop_type="center", padding=mean, ignore_label=cfg.ignore_label),
            transform.ToTensor(),
            transform.Normalize(mean=mean, std=std),
        ]
    )
    val_data = SemData(
        "val", cfg.data_root, cfg.val_list, val_transform, cfg.classes, cfg.ignore_label, cfg.rescale_normalized_input
    )
    val_data.check_samples()
    if dist.world_size() > 1:
        val_data = torch.utils.data.Subset(val_data, range(dist.rank(), len(val_data), dist.world_size()))
    return torch.utils.data.DataLoader(
        val_data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(data_seed),
    )
