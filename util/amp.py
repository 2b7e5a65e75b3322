"""Mixed precision through torch.amp (bf16 or fp16 with a GradScaler), and the apex-era config keys mapped onto it."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from util.errors import UserError

logger = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class MixedPrecision:
    """``amp``: torch.autocast around the forward passes and a GradScaler active for fp16 only (nanoGPT).

    The training attack crafts in fp32 unless ``adv`` (config ``adv_amp``): an fp16 input gradient can
    underflow to 0, and a sign-gradient step on 0 does nothing, which would silently weaken the attack.
    """

    device_type: str = "cpu"
    mode: str = "off"  # off | bf16 | fp16
    adv: bool = False
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))

    @property
    def dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.mode]

    def autocast(self, crafting: bool = False) -> AbstractContextManager:
        if self.dtype is None or (crafting and not self.adv):
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def amp_mode(cfg: DictConfig) -> str:
    """The ``amp`` key; with ``amp: off`` the original apex keys map: use_apex + opt_level O0 -> off,
    O1/O2/O3 -> fp16."""
    if not cfg.use_apex or cfg.amp != "off":
        if cfg.use_apex:
            logger.info(f"amp {cfg.amp} is set: use_apex/opt_level ignored")
        return cfg.amp
    if cfg.opt_level == "O0":
        return "off"
    if cfg.opt_level in ("O1", "O2", "O3"):
        logger.info(
            f"use_apex with opt_level {cfg.opt_level}: mixed precision as amp fp16 through torch.amp "
            f"(apex is not used; keep_batchnorm_fp32 and loss_scale are ignored)"
        )
        return "fp16"
    raise UserError(
        f"config key 'opt_level' must be an apex level O0, O1, O2 or O3, got {cfg.opt_level!r}; "
        f"or set amp (off | bf16 | fp16) and use_apex False"
    )


def build_amp(cfg: DictConfig, device: torch.device) -> MixedPrecision:
    mode = amp_mode(cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")
    return MixedPrecision(device.type, mode, cfg.adv_amp, scaler)
