"""DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018) with plain (not depthwise-separable) convolutions, like the common PyTorch ports; keys ``decoder.*``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.base import SegNet, seg_head
from model.deeplabv3 import ASPP
from model.registry import ARCHS

# Dropout after the ASPP projection and the first decoder conv, as in the widely used PyTorch port
# (jfzhang95/pytorch-deeplab-xception); the last conv's dropout is the model's ``dropout``.
DECODER_DROPOUT = 0.5


class Decoder(nn.Module):
    """ASPP on the high-level features, projected to ``dim`` channels, upsampled to the stride-4 features reduced
    to ``low_dim`` channels, concatenated and fused by a 3x3 conv (the paper's second 3x3 conv is in ``cls``, so
    each DDC-AT head gets its own).

    Args:
        high_dim: channels of the high-level (ASPP input) features.
        low_dim_in: channels of the low-level features.
        atrous_rates: dilation rates of the ASPP 3x3 branches.
        dim: channels of the ASPP branches, the projection and the output.
        low_dim: channels the low-level features are reduced to.
    """

    def __init__(
        self, high_dim: int, low_dim_in: int, atrous_rates: Sequence[int], dim: int = 256, low_dim: int = 48
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_dim, dim, atrous_rates)
        self.project = nn.Sequential(
            nn.Conv2d(self.aspp.out_channels, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Dropout(DECODER_DROPOUT),
        )
        self.low_project = nn.Sequential(
            nn.Conv2d(low_dim_in, low_dim, 1, bias=False),
            nn.BatchNorm2d(low_dim),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(dim + low_dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Dropout(DECODER_DROPOUT),
        )
        self.out_channels = dim

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = self.project(self.aspp(high))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([x, self.low_project(low)], dim=1))


@ARCHS.register("deeplabv3plus")
class DeepLabV3Plus(SegNet):
    """DeepLabV3+: DeepLabV3's ASPP plus a decoder on the stride-4 features; logits at stride 4. Training needs
    at least 2 images a batch (the image-pooling branch is batch-normalised over the batch alone).

    Args:
        atrous_rates: dilation rates of the ASPP 3x3 branches; default the paper's (6, 12, 18) at
            output stride 16, scaled with it ((12, 24, 36) at 8).
        use_aux: add the auxiliary head on the ``mid`` features (layer3).
        pretrained: load the ImageNet weights into the backbone.
        init_path: ImageNet file; default the backbone's file in ``initmodel/``.
        layers, dropout, classes, zoom_factor, output_stride, backbone, heads: as :class:`model.base.SegNet`.
    """

    context_name = "decoder"

    def __init__(
        self,
        layers: int = 50,
        dropout: float = 0.1,
        classes: int = 2,
        zoom_factor: int = 8,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        use_aux: bool = True,
        pretrained: bool = False,
        init_path: str | None = None,
        backbone: str = "resnet",
        heads: str = "plain",
    ) -> None:
        super().__init__(layers, classes, zoom_factor, output_stride, dropout, backbone, heads)
        mid_dim, high_dim = self.channels
        if atrous_rates is None:
            atrous_rates = tuple(rate * 16 // output_stride for rate in (6, 12, 18))
        self.decoder = Decoder(high_dim, self.low_channels, atrous_rates)
        self.add_heads(classes, mid_dim, 1, use_aux, pretrained, init_path)

    def make_head(self, out_channels: int) -> nn.Sequential:
        return seg_head(self.decoder.out_channels, 256, out_channels, 3, self.dropout)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk.features(self, x)
        return feats["mid"], self.decoder(feats["high"], feats["low"])
