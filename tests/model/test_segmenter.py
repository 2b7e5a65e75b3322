"""PIR-AT's Segmenter-ViT-S: a tiny one against a functional restatement written here from the published
architecture (ViT encoder, mask transformer), reading the parameters by the release's key names; the released key
list and shapes, restated here, load strictly, the ImageNet head they keep dropped by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import load_checkpoint_weights, model_from_config
from model.registry import MODELS
from model.segmenter import Segmenter
from util.config import load_config
from util.errors import UserError

TINY = {"image_size": 64, "patch": 16, "dim": 32, "depth": 2, "heads": 4, "decoder_depth": 2}


def ln(s, p, x):
    return F.layer_norm(x, x.shape[-1:], s[p + ".weight"], s[p + ".bias"], 1e-5)


def lin(s, p, x):
    return F.linear(x, s[p + ".weight"], s[p + ".bias"])


def block(s, p, x, heads):
    """Pre-norm block with attention written out: softmax(q k^T / sqrt(d)) v per head."""
    n, t, c = x.shape
    q, k, v = lin(s, p + ".attn.qkv", ln(s, p + ".norm1", x)).reshape(n, t, 3, heads, c // heads).unbind(2)
    q, k, v = (a.transpose(1, 2) for a in (q, k, v))
    attention = torch.softmax(q @ k.transpose(-2, -1) / (c // heads) ** 0.5, -1)
    x = x + lin(s, p + ".attn.proj", (attention @ v).transpose(1, 2).reshape(n, t, c))
    return x + lin(s, p + ".mlp.fc2", F.gelu(lin(s, p + ".mlp.fc1", ln(s, p + ".norm2", x))))


def restated(s, x, classes, depth, decoder_depth, heads, patch, grid):
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, (patch - w % patch) % patch, 0, (patch - h % patch) % patch))
    gh, gw = padded.shape[-2] // patch, padded.shape[-1] // patch
    tokens = F.conv2d(padded, s["encoder.patch_embed.proj.weight"], s["encoder.patch_embed.proj.bias"], patch)
    tokens = tokens.flatten(2).transpose(1, 2)
    pos = s["encoder.pos_embed"]
    pos_grid = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    pos_grid = F.interpolate(pos_grid, size=(gh, gw), mode="bilinear", align_corners=False)
    pos = torch.cat([pos[:, :1], pos_grid.flatten(2).transpose(1, 2)], 1)
    tokens = torch.cat([s["encoder.cls_token"].expand(x.shape[0], -1, -1), tokens], 1) + pos
    for i in range(depth):
        tokens = block(s, f"encoder.blocks.{i}", tokens, heads)
    tokens = ln(s, "encoder.norm", tokens)[:, 1:]
    y = torch.cat([lin(s, "decoder.proj_dec", tokens), s["decoder.cls_emb"].expand(x.shape[0], -1, -1)], 1)
    for i in range(decoder_depth):
        y = block(s, f"decoder.blocks.{i}", y, heads)
    y = ln(s, "decoder.decoder_norm", y)
    patches, embeddings = y[:, :-classes] @ s["decoder.proj_patch"], y[:, -classes:] @ s["decoder.proj_classes"]
    patches = patches / patches.norm(dim=-1, keepdim=True)
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    masks = ln(s, "decoder.mask_norm", patches @ embeddings.transpose(1, 2))
    masks = masks.transpose(1, 2).reshape(x.shape[0], classes, gh, gw)
    return F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]


def _randomised(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=g, dtype=tensor.dtype))
    return model


@pytest.mark.parametrize("size", [(64, 64), (72, 88)])  # the learned grid; padded to 80x96, the embedding resized
def test_tiny_segmenter_gives_the_restated_logits_in_float64(size):
    torch.manual_seed(0)
    model = _randomised(Segmenter(5, **TINY).double().eval())
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    expected = restated(model.state_dict(), x, 5, 2, 2, 4, 16, 4)
    got = model(x)
    assert got.shape == (2, 5, *size)
    assert torch.allclose(got, expected, rtol=0, atol=1e-10), (got - expected).abs().max()


def test_training_returns_the_logits_and_drops_encoder_paths_only():
    model = Segmenter(5, drop_path_rate=0.3, **TINY).train()
    out = model(torch.rand(2, 3, 48, 48))
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 48, 48)
    assert [b.drop_path.p for b in model.encoder.blocks] == [0.0, 0.3]
    assert [b.drop_path.p for b in model.decoder.blocks] == [0.0, 0.0]


def released_keys(classes: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of ``Segmenter_vit_s_robust.pth`` (ViT-S/16 for 512x512 with its 1000-class ImageNet
    head, a 2-block mask transformer), restated from the reference's module layout."""
    d, keys = 384, {"encoder.cls_token": (1, 1, 384), "encoder.pos_embed": (1, 1 + 32 * 32, 384)}
    keys.update({"encoder.patch_embed.proj.weight": (d, 3, 16, 16), "encoder.patch_embed.proj.bias": (d,)})

    def add(prefix, out_dim, in_dim=None):
        keys[prefix + ".weight"] = (out_dim, in_dim) if in_dim else (out_dim,)
        keys[prefix + ".bias"] = (out_dim,)

    def blocks(prefix, count):
        for i in range(count):
            p = f"{prefix}.blocks.{i}"
            add(p + ".norm1", d), add(p + ".norm2", d)
            add(p + ".attn.qkv", 3 * d, d), add(p + ".attn.proj", d, d)
            add(p + ".mlp.fc1", 4 * d, d), add(p + ".mlp.fc2", d, 4 * d)

    blocks("encoder", 12)
    add("encoder.norm", d)
    add("encoder.head", 1000, d)
    keys.update({"decoder.cls_emb": (1, classes, d), "decoder.proj_patch": (d, d), "decoder.proj_classes": (d, d)})
    add("decoder.proj_dec", d, d)
    blocks("decoder", 2)
    add("decoder.decoder_norm", d), add("decoder.mask_norm", classes)
    return keys


def test_the_released_key_list_loads_strictly_without_the_imagenet_head():
    expected = released_keys(151)
    with torch.device("meta"):
        model = MODELS.get("segmenter_vit_s")("segmenter_vit_s", 151)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert (
        set(expected) - set(ours)
        == set(Segmenter.unused_checkpoint_keys)
        == {
            "encoder.head.weight",
            "encoder.head.bias",
        }
    )
    assert ours == {k: v for k, v in expected.items() if not k.startswith("encoder.head.")}


def test_a_file_is_loaded_without_exactly_the_named_unused_keys(tmp_path):
    """The ImageNet head is dropped by name; any other extra key still fails the strict load."""
    model = Segmenter(5, **TINY)
    state = {**model.state_dict(), "encoder.head.weight": torch.zeros(1000, 32), "encoder.head.bias": torch.zeros(1000)}
    path = tmp_path / "Segmenter_vit_s_robust.pth"
    torch.save(state, path)
    fresh = Segmenter(5, **TINY)
    load_checkpoint_weights(fresh, str(path))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
    torch.save({**state, "encoder.head_dist.weight": torch.zeros(1000, 32)}, path)
    with pytest.raises(UserError, match="1 unexpected \\(encoder.head_dist.weight"):
        load_checkpoint_weights(Segmenter(5, **TINY), str(path))


def test_a_checkpoint_of_another_class_count_is_named_in_one_line(tmp_path):
    """The ADE20K file (151 classes) given to a 150-class model: the error names the model that fits it."""
    shape = {**TINY, "dim": 384, "heads": 6, "depth": 1, "decoder_depth": 1}
    path = tmp_path / "Segmenter_vit_s_robust.pth"
    torch.save(Segmenter(151, **shape).state_dict(), path)
    with pytest.raises(UserError) as err:
        load_checkpoint_weights(Segmenter(150, **shape), str(path))
    assert "\n" not in str(err.value)
    assert str(err.value).endswith(
        "looks like PIR-AT Segmenter-ViT-S: set model segmenter_vit_s classes 151 (PIR-AT's Segmenter_vit_s_robust.pth "
        "runs with config/ade20k/ade20k_segmenter_vit_s_pirat.yaml)"
    )


def test_a_config_builds_it_and_refuses_vainf_options_in_one_line():
    cfg = load_config("config/synthetic/synthetic_pspnet18.yaml", ["model", "segmenter_vit_s", "classes", "151"])
    with torch.device("meta"):
        assert isinstance(model_from_config(cfg), Segmenter)
    cfg.separable_conv = True
    with pytest.raises(UserError, match="model 'segmenter_vit_s' has no such choice"), torch.device("meta"):
        model_from_config(cfg)
