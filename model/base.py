"""What PSPNet, DeepLabV3 and DeepLabV3+ share: the trunk, the head layout (plain or DDC-AT's), the forward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import BACKBONES

ZOOM_FACTORS = (1, 2, 4, 8)
HEADS = ("plain", "ddcat")


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


class Trunk:
    """How a SegNet holds, runs and initialises one backbone; each backbone registers a subclass in
    :data:`model.registry.BACKBONES` (:class:`model.resnet.ResNetTrunk`, :class:`model.mobilenetv2.MobileNetV2Trunk`).
    """

    uses_layers = False  # whether the config's ``layers`` (a ResNet depth) means something to it

    @staticmethod
    def build(layers: int, output_stride: int) -> tuple[dict[str, nn.Module], tuple[int, int], int]:
        """(modules the model holds under these names, in this order: the checkpoint keys; (mid, high) channels;
        low (stride 4) channels)."""
        raise NotImplementedError

    @staticmethod
    def features(model: SegNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``low`` (stride 4), ``mid`` (the aux head's input) and ``high`` features of a normalized batch."""
        raise NotImplementedError

    @staticmethod
    def load_imagenet(model: SegNet, init_path: str | None) -> None:
        """The backbone's ImageNet weights (``init_path``, or its default file) into ``model``, strictly."""
        raise NotImplementedError


class SegNet(nn.Module):
    """Trunk + context module + heads; a subclass builds its context module and calls :meth:`add_heads`.

    ``heads="plain"`` builds ``cls`` and ``aux``; ``heads="ddcat"`` builds DDC-AT's (Xu et al., ICCV 2021)
    ``cls1``, ``cls2``, ``mask1`` (the 2-way router) and ``aux_cls1``, the release's names (docs/checkpoints.md).
    Training returns ``{'out', 'aux'}`` (DDC-AT: ``{'out': routed logits, 'mask', 'aux'}``; 'aux' only when
    built); eval returns the main logits (DDC-AT: ``cls1``'s) and skips the other heads.

    Args:
        layers: ResNet depth (ignored, and ``None`` on the model, for other backbones).
        classes: number of output classes.
        zoom_factor: 1, 2, 4 or 8; output resolution (see :func:`upsample_logits`).
        output_stride: backbone output stride (8, 16, 32).
        dropout: Dropout2d probability before the last conv of each head.
        backbone: a name in :data:`model.registry.BACKBONES`.
        heads: ``'plain'`` or ``'ddcat'``.
    """

    context_name = ""  # attribute holding the context module

    def __init__(
        self,
        layers: int,
        classes: int,
        zoom_factor: int,
        output_stride: int,
        dropout: float = 0.1,
        backbone: str = "resnet",
        heads: str = "plain",
    ) -> None:
        super().__init__()
        if zoom_factor not in ZOOM_FACTORS:
            raise ValueError(f"zoom_factor must be one of {ZOOM_FACTORS}, got {zoom_factor}")
        if heads not in HEADS:
            raise ValueError(f"heads must be one of {HEADS}, got {heads!r}")
        self.trunk = BACKBONES.get(backbone)
        self.layers = layers if self.trunk.uses_layers else None
        self.classes = classes
        self.zoom_factor = zoom_factor
        self.dropout = dropout
        self.heads = heads
        modules, self.channels, self.low_channels = self.trunk.build(layers, output_stride)
        for name, module in modules.items():
            self.add_module(name, module)
        self.trunk_names = tuple(modules)

    def add_heads(
        self, classes: int, aux_channels: int, aux_kernel: int, use_aux: bool, pretrained: bool, init_path: str | None
    ) -> None:
        """The constructors' common end: the heads (``aux`` on ``aux_channels`` when ``use_aux``), ImageNet weights."""
        main = self.make_head(classes)
        aux = seg_head(aux_channels, 256, classes, aux_kernel, self.dropout) if use_aux else None
        if self.heads == "ddcat":  # drawn after cls1 and aux, as the release built them
            self.cls1, self.cls2, self.mask1 = main, self.make_head(classes), self.make_head(2)
            self.aux_cls1 = aux
        else:
            self.cls, self.aux = main, aux
        if pretrained:
            self.trunk.load_imagenet(self, init_path)

    @property
    def context(self) -> nn.Module:
        return getattr(self, self.context_name)

    def backbone_modules(self) -> list[nn.Module]:
        """Modules trained at the base learning rate (semseg's ``modules_ori``)."""
        return [getattr(self, name) for name in self.trunk_names]

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at 10x the base learning rate (semseg's ``modules_new``)."""
        heads = [self.cls1, self.cls2, self.mask1, self.aux_cls1] if self.heads == "ddcat" else [self.cls, self.aux]
        return [self.context] + [head for head in heads if head is not None]

    def make_head(self, out_channels: int) -> nn.Sequential:
        """A fresh head with the layout of ``cls`` and ``out_channels`` outputs (DDC-AT adds two)."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input of the aux head, input of the ``cls`` heads) for a normalized batch."""
        feats = self.trunk.features(self, x)
        return feats["mid"], self.context(feats["high"])

    def upsample(self, logits: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        return upsample_logits(logits, input_size, self.zoom_factor)

    def route(
        self, feat: torch.Tensor, input_size: tuple[int, int], cls1: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DDC-AT's (routed logits, router logits) at the output size: per pixel ``cls2``'s logits where the
        router's argmax is 1, ``cls1``'s where it is 0 (``cls1``: its upsampled logits when already computed)."""
        if cls1 is None:
            cls1 = self.upsample(self.cls1(feat), input_size)
        cls2 = self.upsample(self.cls2(feat), input_size)
        mask = self.upsample(self.mask1(feat), input_size)
        to_cls2 = mask.argmax(1, keepdim=True).bool()
        return torch.where(to_cls2, cls2, cls1), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_size = (x.shape[-2], x.shape[-1])
        x_aux, feat = self.features(x)
        if self.heads == "ddcat":
            if not self.training:
                return self.upsample(self.cls1(feat), input_size)
            routed, mask = self.route(feat, input_size)
            result, aux = {"out": routed, "mask": mask}, self.aux_cls1
        else:
            out = self.upsample(self.cls(feat), input_size)
            if not self.training:
                return out
            result, aux = {"out": out}, self.aux
        if aux is not None:
            result["aux"] = self.upsample(aux(x_aux), input_size)
        return result
