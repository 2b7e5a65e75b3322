"""Segmentation models and the one place that builds them (checkpoints: :mod:`model.checkpoint`); each family
registers its names in :mod:`model.registry` from its own module, all imported here."""

from __future__ import annotations

import logging

import torch
from torch import nn

from model.checkpoint import load_checkpoint_weights, load_pirat_init, load_vainf_init, read_checkpoint
from model.registry import ARCHS, BACKBONES, MODELS
from util.errors import UserError
from util.registry import import_submodules

# The import order is the registration order, the order of the choices in error messages.
# isort: off
from model.pspnet import PSPNet
from model.deeplabv3 import DeepLabV3
from model.deeplabv3plus import DeepLabV3Plus
from model.vainf import VainFDeepLab
# isort: on

import_submodules(__name__, __path__)  # every family registers itself; a new one is one new file

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "BACKBONES",
    "MODELS",
    "DeepLabV3",
    "DeepLabV3Plus",
    "PSPNet",
    "VainFDeepLab",
    "build_model",
    "check_names",
    "eval_model_from_config",
    "load_checkpoint_weights",
    "model_from_config",
    "read_checkpoint",
]


def check_names(cfg, where: str = "config") -> None:
    """Check the config's ``arch``, ``backbone`` and ``model`` names (entry points: right after load_config).

    Raises:
        UserError: an unregistered name, in one line with the key and the choices.
    """
    ARCHS.get(cfg.arch, where)
    BACKBONES.get(cfg.backbone, where)
    if cfg.model is not None:
        MODELS.get(cfg.model, where)


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
    """Build ``arch`` (a name in :data:`ARCHS`) on ``backbone`` (``layers``: a ResNet's depth), with DDC-AT's
    heads when ``ddcat``.

    Raises:
        UserError: an unregistered ``arch`` or ``backbone``.
    """
    return ARCHS.get(arch)(
        layers=layers,
        classes=classes,
        zoom_factor=zoom_factor,
        output_stride=output_stride,
        pretrained=pretrained,
        init_path=init_path,
        dropout=dropout,
        use_aux=use_aux,
        backbone=backbone,
        heads="ddcat" if ddcat else "plain",
    )


def model_from_config(cfg, pretrained: bool = False, ddcat: bool = False) -> nn.Module:
    """The network a config describes (``model``: VainF's, else ``arch`` on ``backbone``); every entry point builds
    it here."""
    if cfg.model:
        builder = MODELS.get(cfg.model)
        if builder is not VainFDeepLab:  # refused before a large network is built
            _refuse_vainf_options(cfg, pretrained)
            model = builder(cfg.model, cfg.classes)
            if pretrained:
                load_pirat_init(model, cfg.init_path)
            return model
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


def _refuse_vainf_options(cfg, pretrained: bool) -> None:
    """VainF's options, given to a network named whole that has no such choice, in one line (before it is built)."""
    if pretrained and not cfg.init_path:
        raise UserError(
            f"pretrained True: model {cfg.model!r} starts from a revisiting-at ImageNet file given as init_path "
            f"(facebookresearch's ConvNeXt-T for upernet_convnext_t; initmodel/README.md); set init_path, or "
            f"pretrained False"
        )
    if cfg.separable_conv:
        raise UserError(
            f"separable_conv is VainF's DeepLabV3+ option; model {cfg.model!r} has no such choice: set it False"
        )


def eval_model_from_config(cfg, device: torch.device, path: str | None) -> nn.Module:
    """The config's network with the weights of checkpoint ``path`` (random ones when empty), on ``device``, in
    eval mode."""
    model = model_from_config(cfg)
    if path:
        load_checkpoint_weights(model, path)
    return model.to(device).eval()
