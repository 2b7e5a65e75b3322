"""Segmentation models and the one place that builds them and loads their checkpoints."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from model.deeplabv3 import DeepLabV3
from model.pspnet import PSPNet
from model.resnet import state_dict_mismatch, strip_module_prefix
from util.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["DeepLabV3", "PSPNet", "build_model", "load_checkpoint_weights"]


def build_model(arch: str, layers: int, classes: int, zoom_factor: int = 8,
                output_stride: int = 8, pretrained: bool = False, init_path: str | None = None,
                dropout: float = 0.1, use_aux: bool = True) -> nn.Module:
    """Build ``'psp'`` (:class:`PSPNet`) or ``'aspp'`` (:class:`DeepLabV3`).

    Raises:
        ValueError: for another ``arch`` (the config check gives the user-facing message).
    """
    kwargs = {"layers": layers, "classes": classes, "zoom_factor": zoom_factor,
              "output_stride": output_stride, "pretrained": pretrained, "init_path": init_path,
              "dropout": dropout, "use_aux": use_aux}
    if arch == "psp":
        return PSPNet(**kwargs)
    if arch == "aspp":
        return DeepLabV3(**kwargs)
    raise ValueError(f"unknown arch {arch!r}; expected 'psp' or 'aspp'")


def load_checkpoint_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a training checkpoint (``{'state_dict': ...}`` or a bare state dict) into ``model``.

    ``module.`` prefixes are stripped. Keys and shapes are checked before loading; with
    ``strict=False`` missing and unexpected keys are only logged, shape mismatches still fail.

    Returns:
        The loaded checkpoint dict (``{'state_dict': ...}`` for a bare state dict), so callers can
        read ``epoch`` or ``optimizer``.

    Raises:
        UserError: the file is missing, not a torch checkpoint, or does not fit the model.
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint '{path}' not found; check the path in the config "
                        f"(model_path / resume / weight)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file it cannot read
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"checkpoint '{path}' is not a loadable torch checkpoint "
                        f"(torch.load with weights_only=True failed: {reason})") from err
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]
    else:
        state, checkpoint = checkpoint, {"state_dict": checkpoint}
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise UserError(f"checkpoint '{path}' holds no state dict of tensors "
                        f"(expected a dict with 'state_dict' or a bare state dict)")
    state = strip_module_prefix(state)
    target = model.module if isinstance(model, (nn.DataParallel,
                                                nn.parallel.DistributedDataParallel)) else model
    expected = target.state_dict()
    problem = state_dict_mismatch(state, expected, strict=strict)
    if problem:
        described = (f"arch={getattr(target, 'arch', type(target).__name__)}, "
                     f"layers={getattr(target, 'layers', '?')}, "
                     f"classes={getattr(target, 'classes', '?')}")
        raise UserError(f"checkpoint '{path}' does not fit the model ({described}): {problem}; "
                        f"check arch/layers/classes in the config")
    if not strict:
        ignored = state_dict_mismatch(state, expected, strict=True)
        if ignored:
            logger.warning("checkpoint '%s' loaded non-strictly: %s", path, ignored)
    target.load_state_dict(state, strict=strict)
    logger.info("loaded checkpoint %s", path)
    return dict(checkpoint)
