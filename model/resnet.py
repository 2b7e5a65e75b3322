"""ResNet with semseg's deep stem, dilated by ``output_stride`` while it is built; its keys are semseg's
(docs/checkpoints.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from model.base import SegNet, Trunk
from model.checkpoint import BACKBONE_NAMES, load_backbone_init
from model.registry import BACKBONES

logger = logging.getLogger(__name__)

# Dilation of layer1..layer4 for each output stride. semseg dilates *every* block of a stage,
# its first block included (torchvision's replace_stride_with_dilation does not).
_STAGE_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias; padding equals dilation so the size only depends on stride."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34); both carry the stage's dilation."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) bottleneck (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with the deep stem (three 3x3 convs, 128 channels) of semseg.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in layer1..layer4.
        output_stride: 8, 16 or 32; layer3/layer4 trade stride for dilation to reach it.
        num_classes: classifier outputs (only used with ``with_fc``).
        with_fc: add global pooling and the ImageNet classifier ``fc``.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        output_stride: int = 8,
        num_classes: int = 1000,
        with_fc: bool = False,
    ) -> None:
        super().__init__()
        if output_stride not in _STAGE_DILATIONS:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(64, 64)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = conv3x3(64, 128)
        self.bn3 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 128
        dilations = _STAGE_DILATIONS[output_stride]
        stages = []
        for index, (planes, blocks, dilation) in enumerate(zip((64, 128, 256, 512), layers, dilations)):
            stride = 1 if index == 0 or dilation > 1 else 2
            stages.append(self._make_layer(block, planes, blocks, stride, dilation))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = (256 * block.expansion, 512 * block.expansion)
        self.fc: nn.Linear | None = None
        if with_fc:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int, dilation: int
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def make_layer0(self) -> nn.Sequential:
        """The stem as the segmentation models' ``layer0`` (keys layer0.0/1/3/4/6/7.*)."""
        return nn.Sequential(
            self.conv1,
            self.bn1,
            nn.ReLU(inplace=True),
            self.conv2,
            self.bn2,
            nn.ReLU(inplace=True),
            self.conv3,
            self.bn3,
            nn.ReLU(inplace=True),
            self.maxpool,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Layer4 features, or ImageNet logits when built ``with_fc``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.fc is None:
            return x
        return self.fc(torch.flatten(self.avgpool(x), 1))


_DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet(depth: int, output_stride: int = 8) -> ResNet:
    """Deep-stem ResNet-{18, 34, 50, 101, 152} without classifier.

    Raises:
        ValueError: for any other depth.
    """
    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, output_stride=output_stride)


@BACKBONES.register("resnet")
class ResNetTrunk(Trunk):
    """semseg's deep-stem ResNet as the model's own ``layer0..layer4`` (the release's keys)."""

    uses_layers = True

    @staticmethod
    def build(layers: int, output_stride: int) -> tuple[dict[str, nn.Module], tuple[int, int], int]:
        net = resnet(layers, output_stride)
        stages = (net.make_layer0(), net.layer1, net.layer2, net.layer3, net.layer4)
        return dict(zip(BACKBONE_NAMES, stages)), net.channels, net.channels[0] // 4

    @staticmethod
    def features(model: SegNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = model.layer1(model.layer0(x))
        mid = model.layer3(model.layer2(low))
        return {"low": low, "mid": mid, "high": model.layer4(mid)}

    @staticmethod
    def load_imagenet(model: SegNet, init_path: str | None) -> None:
        """semseg's ImageNet weights (default ``initmodel/resnet{layers}_v2.pth``)."""
        load_backbone_init(model, init_path or f"initmodel/resnet{model.layers}_v2.pth", model.layers)
