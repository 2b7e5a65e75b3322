"""Choosing the device once, from the config."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from util.errors import UserError

log = logging.getLogger(__name__)


def select_device(name: str, gpu_hint: Sequence[int] = ()) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an explicit ``cuda`` without CUDA is an error.

    ``gpu_hint`` is the original configs' ``train_gpu`` / ``test_gpu`` list: a hint, not a demand.
    """
    if name == "auto":
        if torch.cuda.is_available():
            present = torch.cuda.device_count()
            if len(gpu_hint) > present:
                log.info(
                    "train_gpu/test_gpu lists %d GPUs, this machine has %d: using those present", len(gpu_hint), present
                )
            return torch.device("cuda", 0)
        if gpu_hint:
            log.info("no CUDA device: running on the CPU (train_gpu/test_gpu %s ignored)", list(gpu_hint))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"config key 'device': unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"config key 'device' is {name!r} but this machine has no CUDA; use device auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device
