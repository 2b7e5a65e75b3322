"""Segmentation models and the one place that builds them and loads their checkpoints."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from model.ddcat import (
    ddcat_class,
    from_plain_state_dict,
    is_ddcat_state,
    to_plain_state_dict,
)
from model.deeplabv3 import DeepLabV3
from model.deeplabv3plus import DeepLabV3Plus
from model.mobilenetv2 import mobilenetv2_class
from model.pspnet import PSPNet
from model.resnet import read_state_file, state_dict_mismatch
from util.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["DeepLabV3", "DeepLabV3Plus", "PSPNet", "build_model", "load_checkpoint_weights",
           "read_checkpoint"]

ARCHS = {"psp": PSPNet, "aspp": DeepLabV3, "deeplabv3plus": DeepLabV3Plus}
BACKBONES = ("resnet", "mobilenetv2")


def build_model(arch: str, layers: int, classes: int, zoom_factor: int = 8,
                output_stride: int = 8, pretrained: bool = False, init_path: str | None = None,
                dropout: float = 0.1, use_aux: bool = True, ddcat: bool = False,
                backbone: str = "resnet") -> nn.Module:
    """Build ``'psp'`` (:class:`PSPNet`), ``'aspp'`` (:class:`DeepLabV3`) or ``'deeplabv3plus'``
    (:class:`DeepLabV3Plus`) on a ``'resnet'`` of depth ``layers`` or on ``'mobilenetv2'``
    (:mod:`model.mobilenetv2`; ``layers`` ignored); ``ddcat`` adds the DDC-AT heads
    (:mod:`model.ddcat`).

    Raises:
        ValueError: for another ``arch`` or ``backbone`` (the config check gives the user-facing
            message).
    """
    kwargs = {"layers": layers, "classes": classes, "zoom_factor": zoom_factor,
              "output_stride": output_stride, "pretrained": pretrained, "init_path": init_path,
              "dropout": dropout, "use_aux": use_aux}
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
    model_class = ARCHS[arch] if backbone == "resnet" else mobilenetv2_class(ARCHS[arch])
    return (ddcat_class(model_class) if ddcat else model_class)(**kwargs)


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint safely (``weights_only``): (the checkpoint dict, its state dict without
    ``module.`` prefixes). A bare state dict is returned as ``{'state_dict': ...}``.

    Raises:
        UserError: the file is missing or not a torch checkpoint of tensors.
    """
    return read_state_file(path, "checkpoint", "check the path in the config (model_path / resume / weight)",
                           "expected a dict with 'state_dict' or a bare state dict")


def load_checkpoint_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a training checkpoint (``{'state_dict': ...}`` or a bare state dict) into ``model``.

    ``module.`` prefixes are stripped, and a DDC-AT checkpoint loads into the plain model through its
    ``cls1`` head. Keys and shapes are checked before loading; with ``strict=False`` missing and
    unexpected keys are only logged, shape mismatches still fail.

    Returns:
        The loaded checkpoint dict (``{'state_dict': ...}`` for a bare state dict), so callers can
        read ``epoch`` or ``optimizer``.

    Raises:
        UserError: the file is missing, not a torch checkpoint, or does not fit the model.
    """
    checkpoint, state = read_checkpoint(path)
    target = model.module if isinstance(model, (nn.DataParallel,
                                                nn.parallel.DistributedDataParallel)) else model
    expected = target.state_dict()
    if is_ddcat_state(state) and not is_ddcat_state(expected):
        state = to_plain_state_dict(state)
        logger.info("checkpoint %s is a DDC-AT model: using its cls1 head as cls", path)
    elif is_ddcat_state(expected) and not is_ddcat_state(state) and any(k.startswith("cls.") for k in state):
        state = from_plain_state_dict(state, expected)
        logger.info("checkpoint %s is a plain model: its cls head starts cls1 and cls2, mask1 is new", path)
    problem = state_dict_mismatch(state, expected, strict=strict)
    if problem:
        described = (f"arch={getattr(target, 'arch', type(target).__name__)}, "
                     f"layers={getattr(target, 'layers', '?')}, "
                     f"classes={getattr(target, 'classes', '?')}")
        raise UserError(f"checkpoint '{path}' does not fit the model ({described}): {problem}; "
                        f"check arch/layers/classes/defense in the config")
    if not strict:
        ignored = state_dict_mismatch(state, expected, strict=True)
        if ignored:
            logger.warning("checkpoint '%s' loaded non-strictly: %s", path, ignored)
    target.load_state_dict(state, strict=strict)
    logger.info("loaded checkpoint %s", path)
    return checkpoint
