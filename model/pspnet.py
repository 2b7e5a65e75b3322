"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) as in semseg, with its keys (``ppm``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SegNet, seg_head
from model.registry import ARCHS


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
        pooled = [F.interpolate(f(x), size=size, mode="bilinear", align_corners=True) for f in self.features]
        return torch.cat([x, *pooled], dim=1)


@ARCHS.register("psp")
class PSPNet(SegNet):
    """PSPNet: pyramid pooling on the trunk's features. Training needs at least 2 images a batch (the 1x1 bin is
    batch-normalised over the batch alone).

    Args:
        bins: pyramid pooling sizes.
        use_aux: add the auxiliary head on the ``mid`` features (layer3).
        pretrained: load the ImageNet weights into the backbone.
        init_path: ImageNet file; default the backbone's file in ``initmodel/``.
        layers, dropout, classes, zoom_factor, output_stride, backbone, heads: as :class:`model.base.SegNet`.
    """

    context_name = "ppm"

    def __init__(
        self,
        layers: int = 50,
        bins: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        classes: int = 2,
        zoom_factor: int = 8,
        output_stride: int = 8,
        use_aux: bool = True,
        pretrained: bool = False,
        init_path: str | None = None,
        backbone: str = "resnet",
        heads: str = "plain",
    ) -> None:
        super().__init__(layers, classes, zoom_factor, output_stride, dropout, backbone, heads)
        layer3_ch, fea_dim = self.channels
        self.ppm = PPM(fea_dim, fea_dim // len(bins), bins)
        self.add_heads(classes, layer3_ch, 3, use_aux, pretrained, init_path)

    def make_head(self, out_channels: int) -> nn.Sequential:
        return seg_head(self.ppm.out_channels, 512, out_channels, 3, self.dropout)
