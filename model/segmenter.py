"""Segmenter (Strudel et al., ICCV 2021) on ViT-S/16: PIR-AT's ``Segmenter_vit_s_robust.pth`` (Croce, Singh & Hein,
ECCV 2024, nmndeep/Robust-Segmentation), built with the key names of that state dict so that it loads strictly.

Name (config key ``model``): ``segmenter_vit_s``: a ViT encoder (width 384, 12 blocks, 6 heads, class token, a
learned position embedding for a 512x512 input, resized to the input's grid) and the mask-transformer decoder (2
blocks, one embedding per class). Widths, depths and heads are constructor arguments, so a test builds a tiny one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import DropPath, linear_rates
from model.registry import MODELS


class Attention(nn.Module):
    """Multi-head self-attention (``qkv``, ``proj``), by ``scaled_dot_product_attention``: the reference's
    softmax(q k^T / sqrt(d)) v without the (tokens x tokens) attention matrix kept for backward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(batch, tokens, dim)))


class FeedForward(nn.Module):
    """The transformer MLP (``fc1``, GELU, ``fc2``), dropout after each."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``attn`` and ``mlp`` residuals, with stochastic depth."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = FeedForward(dim, hidden, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches, each projected to ``dim`` (a strided conv, ``proj``)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT encoder: patch tokens after the final ``norm``, the class token dropped. The position embedding is
    learned for an ``image_size`` grid and resized bilinearly to another input's grid (the reference resizes only
    when the token count differs; this resizes whenever the grid does)."""

    def __init__(
        self, image_size: int, patch: int, dim: int, depth: int, heads: int, dropout: float, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.patch, self.grid = patch, image_size // patch
        self.patch_embed = PatchEmbedding(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        self.dropout = nn.Dropout(dropout)
        rates = linear_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(Block(dim, heads, 4 * dim, dropout, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1)
        tokens = self.dropout(tokens + self.position_embedding(height, width))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1:]


class MaskTransformer(nn.Module):
    """Segmenter's decoder: patch tokens and one learned embedding per class (``cls_emb``) through transformer
    blocks; a class's mask over the patches is the scalar product of the L2-normalised projections, then
    LayerNorm over the classes (``mask_norm``)."""

    def __init__(self, classes: int, in_dim: int, dim: int, depth: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.classes = classes
        self.proj_dec = nn.Linear(in_dim, dim)
        self.cls_emb = nn.Parameter(torch.zeros(1, classes, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, 4 * dim, dropout, 0.0) for _ in range(depth))
        self.proj_patch = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(classes)

    def forward(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = torch.cat([self.proj_dec(patches), self.cls_emb.expand(patches.shape[0], -1, -1)], 1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = F.normalize(x[:, : -self.classes] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, -self.classes :] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        # A channels-last view, not a copy: bilinear upsampling of many classes runs ~3x faster on it (CPU).
        return masks.reshape(masks.shape[0], *grid, self.classes).permute(0, 3, 1, 2)


class Segmenter(nn.Module):
    """``encoder`` (ViT) and ``decoder`` (mask transformer); the input padded with zeros at the bottom and right to
    a multiple of the patch, the masks upsampled bilinearly to it and cropped back. Training returns
    ``{'out': logits}``, eval the logits.

    Args:
        classes: output classes (151 for PIR-AT's ADE20K model).
        image_size: the input size the position embedding is learned for (512).
        patch, dim, depth, heads: the ViT's patch size, width, blocks and heads (16, 384, 12, 6: ViT-S/16).
        decoder_depth: the mask transformer's blocks (2; its width and heads are the encoder's).
        drop_path_rate: the encoder's largest stochastic-depth rate (training only).
        dropout: the decoder's dropout (training only; the encoder runs without, as the reference's does).
    """

    zoom_factor = 8  # full-resolution logits (model.base.output_size)
    # Keys of the released file that no forward pass reads (the ViT's 1000-class ImageNet head): dropped by name
    # when a checkpoint is loaded.
    unused_checkpoint_keys = ("encoder.head.weight", "encoder.head.bias")

    def __init__(
        self,
        classes: int,
        image_size: int = 512,
        patch: int = 16,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        decoder_depth: int = 2,
        drop_path_rate: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.encoder = VisionTransformer(image_size, patch, dim, depth, heads, 0.0, drop_path_rate)
        self.decoder = MaskTransformer(classes, dim, dim, decoder_depth, heads, dropout)
        self.apply(_init_weights)
        for token in (self.encoder.pos_embed, self.encoder.cls_token, self.decoder.cls_emb):
            nn.init.trunc_normal_(token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, -width % self.patch, 0, -height % self.patch))
        grid = (padded.shape[-2] // self.patch, padded.shape[-1] // self.patch)
        masks = self.decoder(self.encoder(padded), grid)
        logits = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :height, :width]
        return {"out": logits} if self.training else logits

    def backbone_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def head_modules(self) -> list[nn.Module]:
        return [self.decoder]


def _init_weights(module: nn.Module) -> None:
    """The reference's initialisation: linear weights N(0, 0.02) truncated at 2 std, biases 0, LayerNorms 1 and 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@MODELS.register("segmenter_vit_s")
def segmenter_vit_s(name: str, classes: int) -> nn.Module:
    """The released configuration (``MODELS``' calling convention for a network named whole)."""
    return Segmenter(classes)
