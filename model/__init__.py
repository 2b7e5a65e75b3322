"""Segmentation models and the one place that builds them (checkpoints: :mod:`model.checkpoint`)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from model.checkpoint import load_checkpoint_weights, load_vainf_init, read_checkpoint
from model.ddcat import ddcat_class
from model.deeplabv3 import DeepLabV3
from model.deeplabv3plus import DeepLabV3Plus
from model.mobilenetv2 import mobilenetv2_class
from model.pspnet import PSPNet
from model.vainf import VainFDeepLab

logger = logging.getLogger(__name__)

__all__ = [
    "DeepLabV3",
    "DeepLabV3Plus",
    "PSPNet",
    "VainFDeepLab",
    "build_model",
    "eval_model_from_config",
    "load_checkpoint_weights",
    "model_from_config",
    "read_checkpoint",
]

ARCHS = {"psp": PSPNet, "aspp": DeepLabV3, "deeplabv3plus": DeepLabV3Plus}
BACKBONES = ("resnet", "mobilenetv2")


def build_model(
    arch: str,
    layers: int,
    classes: int,
    zoom_factor: int = 8,
    output_stride: int = 8,
    pretrained: bool = False,
    init_path: str | None = None,
    dropout: float = 0.1,
    use_aux: bool = True,
    ddcat: bool = False,
    backbone: str = "resnet",
) -> nn.Module:
    """Build ``'psp'`` (:class:`PSPNet`), ``'aspp'`` (:class:`DeepLabV3`) or ``'deeplabv3plus'``
    (:class:`DeepLabV3Plus`) on a ``'resnet'`` of depth ``layers`` or on ``'mobilenetv2'``
    (:mod:`model.mobilenetv2`; ``layers`` ignored); ``ddcat`` adds the DDC-AT heads
    (:mod:`model.ddcat`).

    Raises:
        ValueError: for another ``arch`` or ``backbone`` (the config check gives the user-facing
            message).
    """
    kwargs = {
        "layers": layers,
        "classes": classes,
        "zoom_factor": zoom_factor,
        "output_stride": output_stride,
        "pretrained": pretrained,
        "init_path": init_path,
        "dropout": dropout,
        "use_aux": use_aux,
    }
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
    model_class = ARCHS[arch] if backbone == "resnet" else mobilenetv2_class(ARCHS[arch])
    return (ddcat_class(model_class) if ddcat else model_class)(**kwargs)


def model_from_config(cfg, pretrained: bool = False, ddcat: bool = False) -> nn.Module:
    """The network a config describes (``model``: VainF's, else ``arch`` on ``backbone``); every entry point builds
    it here."""
    if cfg.model:
        model = VainFDeepLab(cfg.model, cfg.classes, cfg.output_stride, cfg.separable_conv)
        if pretrained:
            load_vainf_init(model, cfg.init_path)
        return model
    return build_model(
        cfg.arch,
        cfg.layers,
        cfg.classes,
        backbone=cfg.backbone,
        zoom_factor=cfg.zoom_factor,
        output_stride=cfg.output_stride,
        pretrained=pretrained,
        init_path=cfg.init_path,
        ddcat=ddcat,
    )


def eval_model_from_config(cfg, device: torch.device, path: str | None) -> nn.Module:
    """The config's network with the weights of checkpoint ``path`` (random ones when empty), on ``device``, in
    eval mode."""
    model = model_from_config(cfg)
    if path:
        load_checkpoint_weights(model, path)
    return model.to(device).eval()
