"""UperNet on ConvNeXt: PIR-AT's UperNet-ConvNeXt (Croce, Singh & Hein, ECCV 2024, nmndeep/Robust-Segmentation),
built with the key names of its released state dicts so that they load strictly.

Names (config key ``model``): ``upernet_convnext_t_cvst`` (depths 3-3-9-3) and ``upernet_convnext_s_cvst``
(3-3-27-3), widths 96-192-384-768, with the convolution stem of the robust ImageNet backbones;
``upernet_convnext_t``, ConvNeXt-T with the original 4x4 patch stem (the reference's ``ConvNeXt-T``, which starts
from facebookresearch/ConvNeXt's clean ImageNet file); ``upernet_convnext_demo``, a tiny one for the synthetic demo.
Widths, depths, stem and head widths are constructor arguments, so a test builds a tiny one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import DropPath, linear_rates
from model.registry import MODELS

WIDTHS = (96, 192, 384, 768)
# The released configurations (stochastic depth: the last block's rate while training), and a tiny one for the
# synthetic demo (make demo-strong), which no release has.
CONFIGS = {
    "upernet_convnext_t_cvst": {"depths": (3, 3, 9, 3), "drop_path_rate": 0.4},
    "upernet_convnext_s_cvst": {"depths": (3, 3, 27, 3), "drop_path_rate": 0.3},
    "upernet_convnext_t": {"depths": (3, 3, 9, 3), "drop_path_rate": 0.4, "stem": "patch"},
    "upernet_convnext_demo": {
        "depths": (1, 1, 2, 1),
        "dims": (16, 32, 64, 128),
        "drop_path_rate": 0.1,
        "channels": 64,
        "aux_channels": 32,
    },
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor (ConvNeXt's ``channels_first`` LayerNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    """The convolution stem (Singh et al., "Revisiting Adversarial Training for ImageNet", NeurIPS 2023): two 3x3
    stride-2 convs, each followed by a channels-first LayerNorm and GELU (3 -> width / 2 -> width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        half = width // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1),
            LayerNorm2d(half),
            nn.GELU(),
            nn.Conv2d(half, width, 3, stride=2, padding=1),
            LayerNorm2d(width),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def patch_stem(width: int) -> nn.Sequential:
    """ConvNeXt's original stem: a 4x4 stride-4 conv and a channels-first LayerNorm (facebookresearch's
    ``downsample_layers.0.0`` / ``.0.1``)."""
    return nn.Sequential(nn.Conv2d(3, width, 4, stride=4), LayerNorm2d(width))


STEMS = {"conv": ConvStem, "patch": patch_stem}


class Block(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm, 4x MLP (as linear layers on channels-last), layer scale
    ``gamma``, residual with stochastic depth."""

    def __init__(self, dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))  # the release trains with layer scale initialised to 1
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) with the convolution or the patch stem (a key
    of :data:`STEMS`), returning the four stages' outputs (strides 4, 8, 16, 32), each through its own LayerNorm
    (``norm0`` ... ``norm3``)."""

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = WIDTHS,
        drop_path_rate: float = 0.0,
        stem: str = "conv",
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([STEMS[stem](dims[0])])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        rates = linear_rates(drop_path_rate, sum(depths))
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*(Block(dims[i], rates[starts[i] + j]) for j in range(depths[i]))) for i in range(4)
        )
        for i in range(4):
            self.add_module(f"norm{i}", LayerNorm2d(dims[i]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            features.append(getattr(self, f"norm{i}")(x))
        return features


class ConvModule(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU, with the release's names (``conv``, ``batch_norm``)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel, padding=padding, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_dim)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(self.conv(x)))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UperNetHead(nn.Module):
    """UperNet (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018): a PPM (pools 1, 2,
    3, 6) on the last stage, lateral 1x1 and FPN 3x3 convs top-down, the levels fused at stride 4, a classifier."""

    def __init__(self, in_dims: Sequence[int], classes: int, channels: int = 512, bins=(1, 2, 3, 6)) -> None:
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvModule(in_dims[-1], channels, 1)) for b in bins
        )
        self.bottleneck = ConvModule(in_dims[-1] + len(bins) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(d, channels, 1) for d in in_dims[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_dims[:-1])
        self.fpn_bottleneck = ConvModule(len(in_dims) * channels, channels, 3, padding=1)
        self.classifier = nn.Conv2d(channels, classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        top = features[-1]
        pooled = [_resize(ppm(top), top.shape[-2:]) for ppm in self.psp_modules]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], 1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = torch.cat([outs[0]] + [_resize(out, size) for out in outs[1:]], 1)
        return self.classifier(self.fpn_bottleneck(fused))


class FCNHead(nn.Module):
    """The auxiliary head on the third stage (training only): a 3x3 ConvModule and a classifier."""

    def __init__(self, in_dim: int, classes: int, channels: int = 256) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_dim, channels, 3, padding=1))
        self.classifier = nn.Conv2d(channels, classes, 1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.convs(feature))


class UperNetConvNeXt(nn.Module):
    """``backbone`` (ConvNeXt), ``decode_head`` (UperNet) and ``auxiliary_head`` (FCN on stage 3); logits upsampled
    bilinearly to the input. Training returns ``{'out', 'aux'}``, eval the logits (the aux head is not run).

    Args:
        classes: output classes (21 VOC, 151 PIR-AT's ADE20K, 150 the common ADE20K convention).
        depths, dims: ConvNeXt's blocks and widths per stage.
        drop_path_rate: the largest stochastic-depth rate (the last block's), used in training only.
        stem: ``conv`` (the robust backbones' convolution stem) or ``patch`` (ConvNeXt's original).
        channels, aux_channels: the UperNet and the auxiliary head's widths.
    """

    zoom_factor = 8  # full-resolution logits (model.base.output_size)

    def __init__(
        self,
        classes: int,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = WIDTHS,
        drop_path_rate: float = 0.4,
        channels: int = 512,
        aux_channels: int = 256,
        stem: str = "conv",
    ) -> None:
        super().__init__()
        self.backbone = ConvNeXt(depths, dims, drop_path_rate, stem)
        self.decode_head = UperNetHead(dims, classes, channels)
        self.auxiliary_head = FCNHead(dims[2], classes, aux_channels)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features = self.backbone(x)
        logits = _resize(self.decode_head(features), x.shape[-2:])
        if not self.training:
            return logits
        return {"out": logits, "aux": _resize(self.auxiliary_head(features[2]), x.shape[-2:])}

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def head_modules(self) -> list[nn.Module]:
        return [self.decode_head, self.auxiliary_head]


def _init_weights(module: nn.Module) -> None:
    """The reference's initialisation: conv and linear weights N(0, 0.02) truncated at 2 std, biases 0."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def upernet_convnext(name: str, classes: int) -> nn.Module:
    """A released configuration by name (``MODELS``' calling convention for a network named whole)."""
    return UperNetConvNeXt(classes, **CONFIGS[name])


for _name in CONFIGS:
    MODELS.register(_name)(upernet_convnext)
