"""MobileNetV2 (Sandler et al., CVPR 2018) as a dilated segmentation backbone, under torchvision's key names
(``features.0..17``; ``features.18`` and the classifier are not built, see docs/checkpoints.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import nn

from model.base import SegNet, Trunk
from model.checkpoint import load_mobilenetv2_init
from model.registry import BACKBONES

logger = logging.getLogger(__name__)

DEFAULT_INIT = "initmodel/mobilenet_v2.pth"
# (expansion t, channels c, blocks n, stride s) of each stage, width multiplier 1.0.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LOW_INDEX, MID_INDEX = 3, 13  # last block of the 24-channel (stride 4) and 96-channel stages


def inverted_residual_blocks(output_stride: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(in channels, out channels, stride, dilation, expansion) of each block after the stem, dilated to
    ``output_stride``: once the stride reaches it, a later stage keeps stride 1 and multiplies the dilation by
    its stride; its first block keeps the previous dilation (DeepLab's MobileNetV2, VainF's)."""
    in_dim, current_stride, dilation = 32, 2, 1
    for expand_ratio, out_dim, blocks, stage_stride in INVERTED_RESIDUAL_SETTING:
        first_dilation = dilation
        if current_stride == output_stride:
            stride, dilation = 1, dilation * stage_stride
        else:
            stride, current_stride = stage_stride, current_stride * stage_stride
        for index in range(blocks):
            yield in_dim, out_dim, stride if index == 0 else 1, first_dilation if index == 0 else dilation, expand_ratio
            in_dim = out_dim


def conv_bn_relu6(
    in_dim: int, out_dim: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    """[conv (no bias), BN, ReLU6]; padding grows with dilation so the size only depends on stride."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, dilation, groups, bias=False),
        nn.BatchNorm2d(out_dim),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped for t = 1) -> 3x3 depthwise (stride, dilation) -> linear 1x1 projection,
    with the identity added when the input and output shapes agree."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_dim * expand_ratio
        self.use_res_connect = stride == 1 and in_dim == out_dim
        layers = [] if expand_ratio == 1 else [conv_bn_relu6(in_dim, hidden, 1)]
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),
            nn.Conv2d(hidden, out_dim, 1, bias=False),
            nn.BatchNorm2d(out_dim),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 ``features.0..17`` dilated to ``output_stride`` (see :func:`inverted_residual_blocks`).

    Returns ``low`` (24 ch, stride 4, after ``features.3``), ``mid`` (96 ch, after ``features.13``, the aux
    head's input) and ``high`` (320 ch, ``features.17``).

    Args:
        output_stride: 8, 16 or 32.
    """

    channels = (96, 320)  # (mid, high), like ResNet.channels (layer3, layer4)
    low_channels = 24

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        features = [conv_bn_relu6(3, 32, 3, stride=2)]
        features += [InvertedResidual(*block) for block in inverted_residual_blocks(output_stride)]
        self.features = nn.Sequential(*features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = {}
        for index, block in enumerate(self.features):
            x = block(x)
            if index == LOW_INDEX:
                outs["low"] = x
            elif index == MID_INDEX:
                outs["mid"] = x
        outs["high"] = x
        return outs


@BACKBONES.register("mobilenetv2")
class MobileNetV2Trunk(Trunk):
    """:class:`MobileNetV2` as the model's ``backbone`` module (keys ``backbone.features.N``)."""

    @staticmethod
    def build(layers: int, output_stride: int) -> tuple[dict[str, nn.Module], tuple[int, int], int]:
        return {"backbone": MobileNetV2(output_stride)}, MobileNetV2.channels, MobileNetV2.low_channels

    @staticmethod
    def features(model: SegNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.backbone(x)

    @staticmethod
    def load_imagenet(model: SegNet, init_path: str | None) -> None:
        """torchvision's ImageNet weights (default ``initmodel/mobilenet_v2.pth``)."""
        load_mobilenetv2_init(model.backbone, init_path or DEFAULT_INIT)
