"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017), the configs'
``aspp``, with the DDC-AT release's keys (``aspp``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SegNet, seg_head
from model.registry import ARCHS


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, one 3x3 conv per rate, and image pooling.

    Args:
        in_dim: input channels.
        out_dim: channels of each branch; the output has ``out_dim * (len(rates) + 2)``.
        rates: dilation rates of the 3x3 branches.
    """

    def __init__(self, in_dim: int, out_dim: int = 256, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        branches = [
            nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True))
        ]
        branches += [
            nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 3, padding=rate, dilation=rate, bias=False),
                nn.BatchNorm2d(out_dim),
                nn.ReLU(inplace=True),
            )
            for rate in rates
        ]
        branches.append(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(in_dim, out_dim, 1, bias=False),
                nn.BatchNorm2d(out_dim),
                nn.ReLU(inplace=True),
            )
        )
        self.convs = nn.ModuleList(branches)
        self.out_channels = out_dim * len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [conv(x) for conv in self.convs[:-1]]
        pooled = self.convs[-1](x)
        outs.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return torch.cat(outs, dim=1)


@ARCHS.register("aspp")
class DeepLabV3(SegNet):
    """DeepLabV3: ASPP on the trunk's features. Training needs at least 2 images a batch (the image-pooling
    branch is batch-normalised over the batch alone).

    Args:
        atrous_rates: dilation rates of the ASPP 3x3 branches.
        use_aux: add the auxiliary head on the ``mid`` features (layer3).
        pretrained: load the ImageNet weights into the backbone.
        init_path: ImageNet file; default the backbone's file in ``initmodel/``.
        layers, dropout, classes, zoom_factor, output_stride, backbone, heads: as :class:`model.base.SegNet`.
    """

    context_name = "aspp"

    def __init__(
        self,
        layers: int = 50,
        dropout: float = 0.1,
        classes: int = 2,
        zoom_factor: int = 8,
        output_stride: int = 8,
        atrous_rates: Sequence[int] = (6, 12, 18),
        use_aux: bool = True,
        pretrained: bool = False,
        init_path: str | None = None,
        backbone: str = "resnet",
        heads: str = "plain",
    ) -> None:
        super().__init__(layers, classes, zoom_factor, output_stride, dropout, backbone, heads)
        layer3_ch, fea_dim = self.channels
        self.aspp = ASPP(fea_dim, 256, atrous_rates)
        self.add_heads(classes, layer3_ch, 1, use_aux, pretrained, init_path)

    def make_head(self, out_channels: int) -> nn.Sequential:
        return seg_head(self.aspp.out_channels, 256, out_channels, 1, self.dropout)
