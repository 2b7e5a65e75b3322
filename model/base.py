"""What PSPNet and DeepLabV3 share: the dilated deep-stem ResNet trunk, the head layout, the forward pass.

A subclass adds its context module (``ppm`` / ``aspp``, names kept for the original checkpoints), ``cls``
and ``aux``, and says which attribute is the context module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import load_backbone_init
from model.resnet import resnet

ZOOM_FACTORS = (1, 2, 4, 8)


def upsample_logits(logits: torch.Tensor, input_size: tuple[int, int], zoom_factor: int) -> torch.Tensor:
    """Resize logits bilinearly (align_corners=True) to the output size for ``zoom_factor``.

    With zoom 8 the output is exactly the input size, for any size. Otherwise it is semseg's
    ``int((H - 1) / 8 * zoom_factor + 1)``, i.e. relative to a 1/8 grid of a (H - 1) % 8 == 0 input.
    """
    size = output_size(input_size, zoom_factor)
    if logits.shape[-2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def seg_head(in_dim: int, hidden: int, classes: int, kernel_size: int, dropout: float) -> nn.Sequential:
    """[conv (no bias), BN, ReLU, Dropout2d, conv 1x1]: the layout of every ``cls`` / ``aux`` head."""
    return nn.Sequential(
        nn.Conv2d(in_dim, hidden, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(hidden, classes, 1),
    )


def output_size(input_size: tuple[int, int], zoom_factor: int) -> tuple[int, int]:
    """Size of the logits for an input of ``input_size`` (see :func:`upsample_logits`)."""
    height, width = input_size
    if zoom_factor == 8:
        return height, width
    return int((height - 1) / 8 * zoom_factor + 1), int((width - 1) / 8 * zoom_factor + 1)


class SegNet(nn.Module):
    """Dilated ResNet trunk (``layer0..layer4``) + context module + ``cls``, with ``aux`` on layer3.

    A subclass builds its context module and heads and may override :meth:`features`; everything
    else (forward, head layout, parameter groups) lives here. Training returns
    ``{'out': logits, 'aux': aux_logits}`` ('aux' only when present); eval returns the main logits
    tensor and skips the aux head.
    """

    arch = ""
    context_name = ""  # attribute holding the context module

    def __init__(self, layers: int, classes: int, zoom_factor: int, output_stride: int, dropout: float = 0.1) -> None:
        super().__init__()
        if zoom_factor not in ZOOM_FACTORS:
            raise ValueError(f"zoom_factor must be one of {ZOOM_FACTORS}, got {zoom_factor}")
        self.layers = layers
        self.classes = classes
        self.zoom_factor = zoom_factor
        self.dropout = dropout
        self.aux: nn.Sequential | None = None
        self.build_trunk(layers, output_stride)

    def build_trunk(self, layers: int, output_stride: int) -> None:
        """Build the trunk and set ``channels`` ((mid, high) channels) and ``low_channels``."""
        backbone = resnet(layers, output_stride)
        self.layer0 = backbone.make_layer0()
        self.layer1, self.layer2 = backbone.layer1, backbone.layer2
        self.layer3, self.layer4 = backbone.layer3, backbone.layer4
        self.channels = backbone.channels  # (layer3, layer4) output channels
        self.low_channels = backbone.channels[0] // 4  # layer1

    def add_heads(
        self, classes: int, aux_channels: int, aux_kernel: int, use_aux: bool, pretrained: bool, init_path: str | None
    ) -> None:
        """The constructors' common end: ``cls``, ``aux`` on ``aux_channels`` when ``use_aux``, ImageNet weights."""
        self.cls = self.make_head(classes)
        if use_aux:
            self.aux = seg_head(aux_channels, 256, classes, aux_kernel, self.dropout)
        if pretrained:
            self.load_imagenet(init_path)

    def load_imagenet(self, init_path: str | None) -> None:
        """semseg's ImageNet weights into the trunk (default ``initmodel/resnet{layers}_v2.pth``)."""
        load_backbone_init(self, init_path or f"initmodel/resnet{self.layers}_v2.pth", self.layers)

    @property
    def context(self) -> nn.Module:
        return getattr(self, self.context_name)

    def backbone_modules(self) -> list[nn.Module]:
        """Modules trained at the base learning rate (semseg's ``modules_ori``)."""
        return [self.layer0, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at 10x the base learning rate (semseg's ``modules_new``)."""
        return [self.context, self.cls] + ([self.aux] if self.aux is not None else [])

    def make_head(self, out_channels: int) -> nn.Sequential:
        """A fresh head with the layout of ``cls`` and ``out_channels`` outputs (DDC-AT adds two)."""
        raise NotImplementedError

    def backbone(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Trunk features: ``low`` (stride 4), ``mid`` (layer3, input of ``aux``), ``high`` (layer4)."""
        low = self.layer1(self.layer0(x))
        mid = self.layer3(self.layer2(low))
        return {"low": low, "mid": mid, "high": self.layer4(mid)}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input of the aux head, input of the ``cls`` heads) for a normalized batch."""
        feats = self.backbone(x)
        return feats["mid"], self.context(feats["high"])

    def upsample(self, logits: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        return upsample_logits(logits, input_size, self.zoom_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_size = (x.shape[-2], x.shape[-1])
        x_aux, feat = self.features(x)
        out = self.upsample(self.cls(feat), input_size)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux is not None:
            result["aux"] = self.upsample(self.aux(x_aux), input_size)
        return result
