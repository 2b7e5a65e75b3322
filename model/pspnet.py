"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) as in semseg.

Module names are those of semseg / DDC-AT checkpoints: ``layer0..4``, ``ppm``, ``cls``, ``aux``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.resnet import load_backbone_init, resnet

ZOOM_FACTORS = (1, 2, 4, 8)


def upsample_logits(logits: torch.Tensor, input_size: tuple[int, int],
                    zoom_factor: int) -> torch.Tensor:
    """Resize logits bilinearly (align_corners=True) to the output size for ``zoom_factor``.

    With zoom 8 the output is exactly the input size, for any size. Otherwise it is semseg's
    ``int((H - 1) / 8 * zoom_factor + 1)``, i.e. relative to a 1/8 grid of a (H - 1) % 8 == 0 input.
    """
    height, width = input_size
    if zoom_factor != 8:
        height = int((height - 1) / 8 * zoom_factor + 1)
        width = int((width - 1) / 8 * zoom_factor + 1)
    if logits.shape[-2:] == (height, width):
        return logits
    return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=True)


class PPM(nn.Module):
    """Pyramid pooling: pool to each bin, reduce by 1x1 conv, upsample, concat to the input.

    Args:
        in_dim: input channels.
        reduction_dim: channels of each pooled branch.
        bins: output sizes of the adaptive average pools.
    """

    def __init__(self, in_dim: int, reduction_dim: int, bins: Sequence[int]) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(bin_size),
                nn.Conv2d(in_dim, reduction_dim, 1, bias=False),
                nn.BatchNorm2d(reduction_dim),
                nn.ReLU(inplace=True),
            )
            for bin_size in bins
        )
        self.out_channels = in_dim + reduction_dim * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(f(x), size=size, mode="bilinear", align_corners=True)
                  for f in self.features]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """PSPNet on a deep-stem dilated ResNet.

    Training returns ``{'out': logits, 'aux': aux_logits}`` ('aux' only with ``use_aux``); eval
    returns the main logits tensor and skips the aux head. In training the batch must hold at least
    2 images: the 1x1 pyramid bin is batch-normalised over the batch alone.

    Args:
        layers: ResNet depth (18, 34, 50, 101, 152).
        bins: pyramid pooling sizes.
        dropout: Dropout2d probability before the last conv of each head.
        classes: number of output classes.
        zoom_factor: 1, 2, 4 or 8; output resolution (see :func:`upsample_logits`).
        output_stride: backbone output stride (8, 16, 32).
        use_aux: add the auxiliary head on layer3.
        pretrained: load semseg's ImageNet weights into the backbone.
        init_path: ImageNet file; defaults to ``initmodel/resnet{layers}_v2.pth``.
    """

    arch = "psp"

    def __init__(self, layers: int = 50, bins: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1,
                 classes: int = 2, zoom_factor: int = 8, output_stride: int = 8,
                 use_aux: bool = True, pretrained: bool = False,
                 init_path: str | None = None) -> None:
        super().__init__()
        if zoom_factor not in ZOOM_FACTORS:
            raise ValueError(f"zoom_factor must be one of {ZOOM_FACTORS}, got {zoom_factor}")
        self.layers = layers
        self.classes = classes
        self.zoom_factor = zoom_factor
        backbone = resnet(layers, output_stride)
        self.layer0 = backbone.make_layer0()
        self.layer1, self.layer2 = backbone.layer1, backbone.layer2
        self.layer3, self.layer4 = backbone.layer3, backbone.layer4
        layer3_ch, fea_dim = backbone.channels
        self.ppm = PPM(fea_dim, fea_dim // len(bins), bins)
        self.cls = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, 512, 3, padding=1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(512, classes, 1),
        )
        self.aux: nn.Sequential | None = None
        if use_aux:
            self.aux = nn.Sequential(
                nn.Conv2d(layer3_ch, 256, 3, padding=1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
                nn.Conv2d(256, classes, 1),
            )
        if pretrained:
            load_backbone_init(self, init_path or f"initmodel/resnet{layers}_v2.pth", layers)

    def backbone_modules(self) -> list[nn.Module]:
        """Modules trained at the base learning rate (semseg's ``modules_ori``)."""
        return [self.layer0, self.layer1, self.layer2, self.layer3, self.layer4]

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at 10x the base learning rate (semseg's ``modules_new``)."""
        return [self.ppm, self.cls] + ([self.aux] if self.aux is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_size = (x.shape[-2], x.shape[-1])
        x = self.layer2(self.layer1(self.layer0(x)))
        x_aux = self.layer3(x)
        x = self.cls(self.ppm(self.layer4(x_aux)))
        out = upsample_logits(x, input_size, self.zoom_factor)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux is not None:
            result["aux"] = upsample_logits(self.aux(x_aux), input_size, self.zoom_factor)
        return result
