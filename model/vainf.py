"""VainF's DeepLabV3 and DeepLabV3+ (VainF/DeepLabV3Plus-Pytorch, the segmentation code of SAM-AT), rebuilt with
the same modules, computation and parameter names, so their checkpoints load strictly and give their logits
(layout: docs/checkpoints.md)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from model.mobilenetv2 import inverted_residual_blocks
from model.registry import MODELS

# VainF's model names (its network.modeling functions): <head>_<backbone>.
NAMES = (
    "deeplabv3_resnet50",
    "deeplabv3plus_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3plus_resnet101",
    "deeplabv3_mobilenet",
    "deeplabv3plus_mobilenet",
)
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def conv_bn_relu(in_dim: int, out_dim: int, kernel: int, padding: int = 0, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_dim, out_dim, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_dim),
        nn.ReLU(inplace=True),
    ]


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(
        self, in_dim: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_dim = planes * self.expansion
        self.conv1 = nn.Conv2d(in_dim, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBackbone(nn.Module):
    """torchvision's ResNet-50/101 up to ``layer4``; returns ``{'low_level': layer1, 'out': layer4}``."""

    def __init__(self, depth: int, output_stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        dilate = (False, True, True) if output_stride == 8 else (False, False, True)
        self.in_dim, self.dilation = 64, 1
        blocks = RESNET_BLOCKS[depth]
        self.layer1 = self._make_layer(64, blocks[0], 1, False)
        self.layer2 = self._make_layer(128, blocks[1], 2, dilate[0])
        self.layer3 = self._make_layer(256, blocks[2], 2, dilate[1])
        self.layer4 = self._make_layer(512, blocks[3], 2, dilate[2])

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self.dilation
        if dilate:
            self.dilation, stride = self.dilation * stride, 1
        downsample = None
        if stride != 1 or self.in_dim != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_dim, planes * Bottleneck.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.in_dim, planes, stride, previous, downsample)]
        self.in_dim = planes * Bottleneck.expansion
        layers += [Bottleneck(self.in_dim, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return {"low_level": low, "out": self.layer4(self.layer3(self.layer2(low)))}


class ConvBNReLU6(nn.Sequential):
    """[conv without padding (no bias), BN, ReLU6]: VainF pads before each inverted-residual block instead."""

    def __init__(
        self, in_dim: int, out_dim: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel, stride, 0, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """VainF's block: the input is zero-padded for the 3x3 depthwise conv (as TF's fixed padding) before the 1x1
    expansion, so the expansion also sees the padded border.

    :class:`model.mobilenetv2.InvertedResidual` pads inside the convs (torchvision's), which gives other numbers
    at the border; both keep their release's arithmetic, and share the block schedule.
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_dim * expand_ratio
        self.use_res_connect = stride == 1 and in_dim == out_dim
        layers = [] if expand_ratio == 1 else [ConvBNReLU6(in_dim, hidden, kernel=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_dim, 1, bias=False),
            nn.BatchNorm2d(out_dim),
        ]
        self.conv = nn.Sequential(*layers)
        total = 2 * dilation  # effective 3x3 kernel minus 1
        self.input_padding = (total // 2, total - total // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.input_padding))
        return x + out if self.use_res_connect else out


class MobileNetBackbone(nn.Module):
    """VainF's MobileNetV2 as a backbone: ``low_level_features`` (stride 4, 24 channels) and
    ``high_level_features`` (320 channels); returns ``{'low_level': ..., 'out': ...}``."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        features += [InvertedResidual(*block) for block in inverted_residual_blocks(output_stride)]
        self.low_level_features = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(features[:4])))
        self.high_level_features = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(features) if i >= 4))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


class ASPPPooling(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_dim, out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """VainF's ASPP: 1x1, three atrous 3x3 and image pooling branches of 256 channels, projected by a 1x1 conv
    with dropout 0.1."""

    def __init__(self, in_dim: int, rates: tuple[int, int, int], out_dim: int = 256) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Sequential(*conv_bn_relu(in_dim, out_dim, 1)),
                *(nn.Sequential(*conv_bn_relu(in_dim, out_dim, 3, rate, rate)) for rate in rates),
                ASPPPooling(in_dim, out_dim),
            ]
        )
        self.project = nn.Sequential(*conv_bn_relu(5 * out_dim, out_dim, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Module):
    """DeepLabV3's head: ASPP, a 3x3 conv, the classifier."""

    def __init__(self, in_dim: int, classes: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.classifier = nn.Sequential(ASPP(in_dim, rates), *conv_bn_relu(256, 256, 3, 1), nn.Conv2d(256, classes, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(features["out"])


class DeepLabHeadV3Plus(nn.Module):
    """DeepLabV3+'s head: the low-level features projected to 48 channels beside the upsampled ASPP output, one
    3x3 conv, the classifier."""

    def __init__(self, in_dim: int, low_dim: int, classes: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.project = nn.Sequential(*conv_bn_relu(low_dim, 48, 1))
        self.aspp = ASPP(in_dim, rates)
        self.classifier = nn.Sequential(*conv_bn_relu(304, 256, 3, 1), nn.Conv2d(256, classes, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        high = F.interpolate(self.aspp(features["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, high], dim=1))


class SeparableConv(nn.Module):
    """VainF's AtrousSeparableConvolution: depthwise (the original's stride, padding, dilation) then 1x1."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        bias = conv.bias is not None
        self.body = nn.Sequential(
            nn.Conv2d(
                conv.in_channels,
                conv.in_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                groups=conv.in_channels,
                bias=bias,
            ),
            nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def to_separable(module: nn.Module) -> nn.Module:
    """Every conv with a kernel above 1 in ``module`` replaced by :class:`SeparableConv` (VainF's
    ``--separable_conv``, applied to the V3+ head)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.kernel_size[0] > 1:
            setattr(module, name, SeparableConv(child))
        else:
            to_separable(child)
    return module


class VainFDeepLab(nn.Module):
    """``backbone`` + ``classifier``, logits upsampled to the input. Training returns ``{'out': logits}``, eval the
    logits tensor (this project's convention; VainF's model always returns the tensor).

    Args:
        name: one of :data:`NAMES`.
        classes: number of output classes.
        output_stride: 8 or 16.
        separable_conv: VainF's ``--separable_conv`` (the V3+ head's 3x3 convs depthwise-separable).
    """

    zoom_factor = 8  # full-resolution logits (model.base.output_size)

    def __init__(self, name: str, classes: int, output_stride: int = 16, separable_conv: bool = False) -> None:
        super().__init__()
        if name not in NAMES:
            raise ValueError(f"unknown VainF model {name!r}; expected one of {list(NAMES)}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        head, backbone = name.split("_")
        self.name = name
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        if backbone == "mobilenet":
            self.backbone, in_dim, low_dim = MobileNetBackbone(output_stride), 320, 24
        else:
            self.backbone, in_dim, low_dim = ResNetBackbone(int(backbone[6:]), output_stride), 2048, 256
        if head == "deeplabv3plus":
            self.classifier = DeepLabHeadV3Plus(in_dim, low_dim, classes, rates)
            if separable_conv:
                to_separable(self.classifier)
        else:
            self.classifier = DeepLabHead(in_dim, classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        logits = F.interpolate(
            self.classifier(self.backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return {"out": logits} if self.training else logits

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def head_modules(self) -> list[nn.Module]:
        return [self.classifier]


for _name in NAMES:  # VainF selects its model by name; each name builds this class
    MODELS.register(_name)(VainFDeepLab)
