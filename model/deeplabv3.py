"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017).

The ``aspp`` architecture of the configs: a deep-stem dilated ResNet with an ASPP head, with the
same ``layer0..layer4`` / ``cls`` / ``aux`` naming and forward conventions as :class:`PSPNet`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.pspnet import ZOOM_FACTORS, upsample_logits
from model.resnet import load_backbone_init, resnet


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, one 3x3 conv per rate, and image pooling.

    Args:
        in_dim: input channels.
        out_dim: channels of each branch; the output has ``out_dim * (len(rates) + 2)``.
        rates: dilation rates of the 3x3 branches.
    """

    def __init__(self, in_dim: int, out_dim: int = 256,
                 rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        branches = [nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, bias=False),
                                  nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True))]
        branches += [nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=rate, dilation=rate,
                                             bias=False),
                                   nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True))
                     for rate in rates]
        branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                      nn.Conv2d(in_dim, out_dim, 1, bias=False),
                                      nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True)))
        self.convs = nn.ModuleList(branches)
        self.out_channels = out_dim * len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x) for conv in self.convs[:-1]]
        pooled = self.convs[-1](x)
        outs.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return torch.cat(outs, dim=1)


class DeepLabV3(nn.Module):
    """DeepLabV3 on a deep-stem dilated ResNet.

    Training returns ``{'out': logits, 'aux': aux_logits}`` ('aux' only with ``use_aux``); eval
    returns the main logits tensor and skips the aux head. In training the batch must hold at least
    2 images: the ASPP image-pooling branch is batch-normalised over the batch alone.

    Args:
        layers: ResNet depth (18, 34, 50, 101, 152).
        dropout: Dropout2d probability before the last conv of each head.
        classes: number of output classes.
        zoom_factor: 1, 2, 4 or 8; output resolution (see :func:`model.pspnet.upsample_logits`).
        output_stride: backbone output stride (8, 16, 32).
        atrous_rates: dilation rates of the ASPP 3x3 branches.
        use_aux: add the auxiliary head on layer3.
        pretrained: load semseg's ImageNet weights into the backbone.
        init_path: ImageNet file; defaults to ``initmodel/resnet{layers}_v2.pth``.
    """

    arch = "aspp"

    def __init__(self, layers: int = 50, dropout: float = 0.1, classes: int = 2,
                 zoom_factor: int = 8, output_stride: int = 8,
                 atrous_rates: Sequence[int] = (6, 12, 18), use_aux: bool = True,
                 pretrained: bool = False, init_path: str | None = None) -> None:
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
        self.aspp = ASPP(fea_dim, 256, atrous_rates)
        self.cls = nn.Sequential(
            nn.Conv2d(self.aspp.out_channels, 256, 1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(256, classes, 1),
        )
        self.aux: nn.Sequential | None = None
        if use_aux:
            self.aux = nn.Sequential(
                nn.Conv2d(layer3_ch, 256, 1, bias=False),
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
        return [self.aspp, self.cls] + ([self.aux] if self.aux is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_size = (x.shape[-2], x.shape[-1])
        x = self.layer2(self.layer1(self.layer0(x)))
        x_aux = self.layer3(x)
        x = self.cls(self.aspp(self.layer4(x_aux)))
        out = upsample_logits(x, input_size, self.zoom_factor)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux is not None:
            result["aux"] = upsample_logits(self.aux(x_aux), input_size, self.zoom_factor)
        return result
