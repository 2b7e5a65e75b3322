"""PIR-AT's robust ImageNet initialisations (nmndeep/revisiting-at files: timm's names inside the normaliser and
DDP wrappers): the releases' key lists, restated here, map strictly onto our ConvNeXt and ViT; the weights land
where a restatement of PIR-AT's ``load_carefully_cvst`` (and, for facebookresearch/ConvNeXt's clean file of the
patch-stem ConvNeXt-T, ``load_carefully``) copies them; the ViT's position embedding is resized as
its ``resize_pos_embed`` does; a file that does not fit is one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import model_from_config
from model.checkpoint import convnext_init_state, load_pirat_init, state_dict_mismatch, vit_init_state
from model.registry import MODELS
from model.segmenter import Segmenter
from model.upernet import UperNetConvNeXt
from util.config import load_config
from util.errors import UserError

WRAP = "module.base_model.model."  # DDP around the normaliser Sequential around timm's model
NORMALISER = {"module.base_model.normalize.mean": (1, 3, 1, 1), "module.base_model.normalize.std": (1, 3, 1, 1)}


def convnext_cvst_keys(depths, dims=(96, 192, 384, 768)) -> dict[str, tuple[int, ...]]:
    """timm's ConvNeXt with revisiting-at's ConvBlock1 stem, and its ImageNet head."""
    keys = dict(NORMALISER)

    def add(name, *shape):
        keys[WRAP + name] = shape

    half = dims[0] // 2
    add("stem.stem.0.weight", half, 3, 3, 3), add("stem.stem.0.bias", half)
    add("stem.stem.1.weight", half), add("stem.stem.1.bias", half)
    add("stem.stem.3.weight", dims[0], half, 3, 3), add("stem.stem.3.bias", dims[0])
    add("stem.stem.4.weight", dims[0]), add("stem.stem.4.bias", dims[0])
    for i, (depth, d) in enumerate(zip(depths, dims)):
        if i:
            add(f"stages.{i}.downsample.0.weight", dims[i - 1]), add(f"stages.{i}.downsample.0.bias", dims[i - 1])
            add(f"stages.{i}.downsample.1.weight", d, dims[i - 1], 2, 2), add(f"stages.{i}.downsample.1.bias", d)
        for k in range(depth):
            b = f"stages.{i}.blocks.{k}."
            add(b + "gamma", d), add(b + "conv_dw.weight", d, 1, 7, 7), add(b + "conv_dw.bias", d)
            add(b + "norm.weight", d), add(b + "norm.bias", d)
            add(b + "mlp.fc1.weight", 4 * d, d), add(b + "mlp.fc1.bias", 4 * d)
            add(b + "mlp.fc2.weight", d, 4 * d), add(b + "mlp.fc2.bias", d)
    add("head.norm.weight", dims[-1]), add("head.norm.bias", dims[-1])
    add("head.fc.weight", 1000, dims[-1]), add("head.fc.bias", 1000)
    return keys


def convnext_patch_keys(depths, dims=(96, 192, 384, 768)) -> dict[str, tuple[int, ...]]:
    """facebookresearch/ConvNeXt's ImageNet file (``convnext_tiny_1k_224_ema.pth``: the state dict under
    ``model``): the patch stem, LayerNorm + 2x2 conv downsamplings, blocks, the final norm and the head."""
    keys = {"downsample_layers.0.0.weight": (dims[0], 3, 4, 4), "downsample_layers.0.0.bias": (dims[0],)}
    keys.update({"downsample_layers.0.1.weight": (dims[0],), "downsample_layers.0.1.bias": (dims[0],)})
    for i, (depth, d) in enumerate(zip(depths, dims)):
        if i:
            keys[f"downsample_layers.{i}.0.weight"] = keys[f"downsample_layers.{i}.0.bias"] = (dims[i - 1],)
            keys[f"downsample_layers.{i}.1.weight"] = (d, dims[i - 1], 2, 2)
            keys[f"downsample_layers.{i}.1.bias"] = (d,)
        for k in range(depth):
            b = f"stages.{i}.{k}."
            keys.update({b + "gamma": (d,), b + "dwconv.weight": (d, 1, 7, 7), b + "dwconv.bias": (d,)})
            keys.update({b + "norm.weight": (d,), b + "norm.bias": (d,)})
            keys.update({b + "pwconv1.weight": (4 * d, d), b + "pwconv1.bias": (4 * d,)})
            keys.update({b + "pwconv2.weight": (d, 4 * d), b + "pwconv2.bias": (d,)})
    keys.update({"norm.weight": (dims[-1],), "norm.bias": (dims[-1],)})
    keys.update({"head.weight": (1000, dims[-1]), "head.bias": (1000,)})
    return keys


def vit_s_keys() -> dict[str, tuple[int, ...]]:
    """timm's vit_small_patch16_224 (224x224: 14x14 patches and the class token) with its ImageNet head."""
    d, keys = 384, dict(NORMALISER)
    keys.update({WRAP + "cls_token": (1, 1, d), WRAP + "pos_embed": (1, 197, d)})
    keys.update({WRAP + "patch_embed.proj.weight": (d, 3, 16, 16), WRAP + "patch_embed.proj.bias": (d,)})
    for i in range(12):
        b = f"{WRAP}blocks.{i}."
        for name, out_dim, in_dim in (
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.fc1", 4 * d, d),
            ("mlp.fc2", d, 4 * d),
        ):
            keys[b + name + ".weight"], keys[b + name + ".bias"] = (out_dim, in_dim), (out_dim,)
        for norm in ("norm1", "norm2"):
            keys[b + norm + ".weight"] = keys[b + norm + ".bias"] = (d,)
    keys.update({WRAP + "norm.weight": (d,), WRAP + "norm.bias": (d,)})
    keys.update({WRAP + "head.weight": (1000, d), WRAP + "head.bias": (1000,)})
    return keys


def _meta(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.mark.parametrize(
    "name,depths", [("upernet_convnext_t_cvst", (3, 3, 9, 3)), ("upernet_convnext_s_cvst", (3, 3, 27, 3))]
)
def test_the_convnext_cvst_release_layout_maps_strictly(name, depths):
    with torch.device("meta"):
        backbone = MODELS.get(name)(name, 21).backbone
    expected = {
        k: v for k, v in backbone.state_dict().items() if not k.startswith(("norm0.", "norm1.", "norm2.", "norm3."))
    }
    assert state_dict_mismatch(convnext_init_state(_meta(convnext_cvst_keys(depths))), expected) == ""


def test_facebookresearchs_convnext_t_layout_maps_strictly_onto_the_patch_stem_model():
    with torch.device("meta"):
        backbone = MODELS.get("upernet_convnext_t")("upernet_convnext_t", 21).backbone
    expected = {
        k: v for k, v in backbone.state_dict().items() if not k.startswith(tuple(f"norm{i}." for i in range(4)))
    }
    assert state_dict_mismatch(convnext_init_state(_meta(convnext_patch_keys((3, 3, 9, 3)))), expected) == ""


def test_the_vit_s_release_layout_maps_strictly_with_its_grid_resized():
    with torch.device("meta"):
        encoder = MODELS.get("segmenter_vit_s")("segmenter_vit_s", 151).encoder
    mapped = vit_init_state(_meta(vit_s_keys()), encoder.pos_embed)
    assert mapped["pos_embed"].shape == (1, 1 + 32 * 32, 384)
    assert state_dict_mismatch(mapped, encoder.state_dict()) == ""


def restated_load_carefully_cvst(backbone, ckpt, depths):
    """PIR-AT's load_carefully_cvst, as written there: its prefixes stripped, then weights copied by name."""
    ckpt = {k.replace("module.", ""): v for k, v in ckpt.items()}
    ckpt = {k.replace("base_model.", "").removeprefix("model."): v for k, v in ckpt.items()}
    with torch.no_grad():
        for i in [0, 1, 3, 4]:
            backbone.downsample_layers[0].stem[i].weight.copy_(ckpt[f"stem.stem.{i}.weight"])
            backbone.downsample_layers[0].stem[i].bias.copy_(ckpt[f"stem.stem.{i}.bias"])
        for stage in range(1, 4):
            for p in range(2):
                backbone.downsample_layers[stage][p].weight.copy_(ckpt[f"stages.{stage}.downsample.{p}.weight"])
                backbone.downsample_layers[stage][p].bias.copy_(ckpt[f"stages.{stage}.downsample.{p}.bias"])
        timm = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
        _copy_blocks(backbone, ckpt, depths, "stages.{j}.blocks.{k}.", timm)


def _copy_blocks(backbone, ckpt, depths, block_key, names):
    """Both restatements' block loop: gamma, then each layer's weight and bias from ``ckpt`` under ``names``."""
    for j in range(4):
        for k in range(depths[j]):
            block, b = backbone.stages[j][k], block_key.format(j=j, k=k)
            block.gamma.copy_(ckpt[b + "gamma"])
            for ours, theirs in names.items():
                getattr(block, ours).weight.copy_(ckpt[b + theirs + ".weight"])
                getattr(block, ours).bias.copy_(ckpt[b + theirs + ".bias"])


def test_a_robust_convnext_file_lands_where_pir_at_copies_it(tmp_path):
    demo = MODELS.get("upernet_convnext_demo")
    depths, dims = (1, 1, 2, 1), (16, 32, 64, 128)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) for k, shape in convnext_cvst_keys(depths, dims).items()}
    path = tmp_path / "convnext_tiny_cvst_robust.pt"
    torch.save(state, path)
    ours, reference = demo("upernet_convnext_demo", 5), demo("upernet_convnext_demo", 5)
    reference.load_state_dict(ours.state_dict())
    load_pirat_init(ours, str(path))
    restated_load_carefully_cvst(reference.backbone, state, depths)
    for (key, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key  # the stage-output norms and the heads untouched in both
    x = torch.rand(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(ours.eval().backbone(x), reference.eval().backbone(x)))


def restated_load_carefully(backbone, ckpt, depths):
    """PIR-AT's load_carefully (the patch-stem ConvNeXt from facebookresearch's file), as written there."""
    ckpt = ckpt["model"]
    with torch.no_grad():
        for i in range(4):
            for p in range(2):
                backbone.downsample_layers[i][p].weight.copy_(ckpt[f"downsample_layers.{i}.{p}.weight"])
                backbone.downsample_layers[i][p].bias.copy_(ckpt[f"downsample_layers.{i}.{p}.bias"])
        _copy_blocks(
            backbone, ckpt, depths, "stages.{j}.{k}.", {n: n for n in ("dwconv", "norm", "pwconv1", "pwconv2")}
        )


def test_a_clean_facebookresearch_convnext_file_lands_where_pir_at_copies_it(tmp_path):
    depths, dims = (1, 1, 2, 1), (16, 32, 64, 128)
    g = torch.Generator().manual_seed(1)
    state = {"model": {k: torch.randn(shape, generator=g) for k, shape in convnext_patch_keys(depths, dims).items()}}
    torch.save(state, tmp_path / "convnext_tiny_1k_224_ema.pth")
    tiny = {"depths": depths, "dims": dims, "channels": 32, "aux_channels": 16, "stem": "patch"}
    ours, reference = UperNetConvNeXt(5, **tiny), UperNetConvNeXt(5, **tiny)
    reference.load_state_dict(ours.state_dict())
    load_pirat_init(ours, str(tmp_path / "convnext_tiny_1k_224_ema.pth"))
    restated_load_carefully(reference.backbone, state, depths)
    for (key, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key
    x = torch.rand(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(ours.eval().backbone(x), reference.eval().backbone(x)))
    with pytest.raises(UserError, match="does not fit the ConvNeXt backbone: .*facebookresearch's ConvNeXt-T"):
        load_pirat_init(
            MODELS.get("upernet_convnext_demo")("upernet_convnext_demo", 5),
            str(tmp_path / "convnext_tiny_1k_224_ema.pth"),
        )


def test_a_robust_vit_file_gets_its_position_embedding_resized_as_pir_at_s(tmp_path):
    tiny = {"image_size": 64, "patch": 16, "dim": 32, "depth": 2, "heads": 4}
    model = Segmenter(5, **tiny)
    g = torch.Generator().manual_seed(0)
    state = {WRAP + k: torch.randn(v.shape, generator=g) for k, v in model.encoder.state_dict().items()}
    state[WRAP + "pos_embed"] = torch.randn(1, 1 + 14 * 14, 32, generator=g)
    state[WRAP + "head.weight"], state[WRAP + "head.bias"] = torch.zeros(1000, 32), torch.zeros(1000)
    state.update({k: torch.zeros(shape) for k, shape in NORMALISER.items()})
    torch.save(state, tmp_path / "vit_s_robust.pt")
    load_pirat_init(model, str(tmp_path / "vit_s_robust.pt"))
    posemb = state[WRAP + "pos_embed"]
    grid = F.interpolate(posemb[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(4, 4), mode="bilinear")
    expected = torch.cat([posemb[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 16, -1)], 1)  # resize_pos_embed
    assert torch.allclose(model.encoder.pos_embed, expected, atol=1e-6)
    assert torch.equal(model.encoder.blocks[1].mlp.fc2.weight, state[WRAP + "blocks.1.mlp.fc2.weight"])


def test_a_file_that_does_not_fit_and_a_missing_init_path_are_one_line(tmp_path):
    demo = MODELS.get("upernet_convnext_demo")
    state = {k: torch.zeros(shape) for k, shape in convnext_cvst_keys((1, 1, 3, 1), (16, 32, 64, 128)).items()}
    torch.save(state, tmp_path / "other_depth.pt")
    with pytest.raises(UserError) as err:
        load_pirat_init(demo("upernet_convnext_demo", 5), str(tmp_path / "other_depth.pt"))
    message = str(err.value)
    assert "\n" not in message and "does not fit the ConvNeXt backbone: unexpected keys [stages.2.2." in message
    cfg = load_config("config/synthetic/synthetic_upernet_demo.yaml", ["pretrained", "True"])
    with pytest.raises(UserError, match="starts from a revisiting-at ImageNet file given as init_path"):
        model_from_config(cfg, pretrained=True)
    cfg.init_path = str(tmp_path / "other_depth.pt")
    with pytest.raises(UserError, match="does not fit the ConvNeXt backbone"):
        model_from_config(cfg, pretrained=True)


def test_a_segmentation_checkpoint_gives_its_trunk_only(tmp_path):
    """The miniature's pre-training (make demo-pirat) hands a segmentation model's backbone on, heads left out."""
    demo = MODELS.get("upernet_convnext_demo")
    source, target = demo("upernet_convnext_demo", 5), demo("upernet_convnext_demo", 3)
    torch.save({"state_dict": source.state_dict(), "epoch": 1}, tmp_path / "train_epoch_1.pth")
    heads = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("backbone.")}
    load_pirat_init(target, str(tmp_path / "train_epoch_1.pth"))
    assert all(torch.equal(v, source.backbone.state_dict()[k]) for k, v in target.backbone.state_dict().items())
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in heads.items())
