"""PIR-AT's UperNet-ConvNeXt: a tiny one against a functional restatement written here from the published
architecture (ConvNeXt with the convolution stem, UperNet, the FCN auxiliary head), reading the parameters by the
release's key names; the released key list and shapes, restated here, load strictly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import load_checkpoint_weights, model_from_config
from model.registry import MODELS
from model.upernet import UperNetConvNeXt
from util.config import load_config
from util.errors import UserError

TINY = {"depths": (1, 1, 2, 1), "dims": (8, 16, 24, 32), "channels": 16, "aux_channels": 8}


def ln_cf(s, p, x):
    """The reference's channels-first LayerNorm, as it writes it: mean and biased variance over channels."""
    u = x.mean(1, keepdim=True)
    v = (x - u).pow(2).mean(1, keepdim=True)
    return s[p + ".weight"][:, None, None] * (x - u) / torch.sqrt(v + 1e-6) + s[p + ".bias"][:, None, None]


def conv_module(s, p, x, padding=0):
    x = F.conv2d(x, s[p + ".conv.weight"], padding=padding)
    w = p + ".batch_norm"
    x = F.batch_norm(x, s[w + ".running_mean"], s[w + ".running_var"], s[w + ".weight"], s[w + ".bias"], False)
    return F.relu(x)


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def restated_backbone(s, x, depths):
    b = "backbone."
    for i in (0, 3):
        k = f"{b}downsample_layers.0.stem.{i}"
        x = F.gelu(
            ln_cf(s, f"{b}downsample_layers.0.stem.{i + 1}", F.conv2d(x, s[k + ".weight"], s[k + ".bias"], 2, 1))
        )
    features = []
    for i, depth in enumerate(depths):
        if i:
            d = f"{b}downsample_layers.{i}"
            x = F.conv2d(ln_cf(s, d + ".0", x), s[d + ".1.weight"], s[d + ".1.bias"], 2)
        for j in range(depth):
            k = f"{b}stages.{i}.{j}."
            y = F.conv2d(x, s[k + "dwconv.weight"], s[k + "dwconv.bias"], padding=3, groups=x.shape[1])
            y = y.permute(0, 2, 3, 1)
            y = F.layer_norm(y, y.shape[-1:], s[k + "norm.weight"], s[k + "norm.bias"], 1e-6)
            y = F.linear(F.gelu(F.linear(y, s[k + "pwconv1.weight"], s[k + "pwconv1.bias"])), s[k + "pwconv2.weight"])
            y = (y + s[k + "pwconv2.bias"]) * s[k + "gamma"]
            x = x + y.permute(0, 3, 1, 2)
        features.append(ln_cf(s, f"{b}norm{i}", x))
    return features


def restated_upernet(s, features):
    h = "decode_head."
    top = features[-1]
    pooled = [
        up(conv_module(s, f"{h}psp_modules.{k}.1", F.adaptive_avg_pool2d(top, b)), top.shape[-2:])
        for k, b in enumerate((1, 2, 3, 6))
    ]
    levels = [conv_module(s, f"{h}lateral_convs.{i}", features[i]) for i in range(3)]
    levels.append(conv_module(s, h + "bottleneck", torch.cat([top, *pooled], 1), padding=1))
    for i in (3, 2, 1):
        levels[i - 1] = levels[i - 1] + up(levels[i], levels[i - 1].shape[-2:])
    outs = [conv_module(s, f"{h}fpn_convs.{i}", levels[i], padding=1) for i in range(3)] + [levels[3]]
    fused = torch.cat([outs[0]] + [up(o, outs[0].shape[-2:]) for o in outs[1:]], 1)
    return F.conv2d(
        conv_module(s, h + "fpn_bottleneck", fused, padding=1), s[h + "classifier.weight"], s[h + "classifier.bias"]
    )


def _randomised(model):
    """Every buffer and parameter moved off its initial value (biases 0, norms 1), so each shows in the logits."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=g, dtype=tensor.dtype) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=g, dtype=tensor.dtype))
    return model


def test_tiny_upernet_convnext_gives_the_restated_logits_in_float64():
    torch.manual_seed(0)
    model = _randomised(UperNetConvNeXt(5, **TINY).double().eval())
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    s = model.state_dict()
    expected = up(restated_upernet(s, restated_backbone(s, x, TINY["depths"])), (64, 80))
    got = model(x)
    assert got.shape == (2, 5, 64, 80)
    assert torch.allclose(got, expected, rtol=0, atol=1e-10), (got - expected).abs().max()
    aux = model.auxiliary_head(model.backbone(x)[2])  # stage 3, the release's in_index 2
    head = "auxiliary_head."
    restated = conv_module(s, head + "convs.0", restated_backbone(s, x, TINY["depths"])[2], padding=1)
    restated = F.conv2d(restated, s[head + "classifier.weight"], s[head + "classifier.bias"])
    assert torch.allclose(aux, restated, rtol=0, atol=1e-10)


def test_training_returns_the_aux_logits_and_drops_paths_per_sample():
    torch.manual_seed(0)
    model = UperNetConvNeXt(5, drop_path_rate=0.5, **TINY).train()
    out = model(torch.rand(4, 3, 32, 32))
    assert set(out) == {"out", "aux"} and out["out"].shape == out["aux"].shape == (4, 5, 32, 32)
    last = model.backbone.stages[3][0].drop_path
    assert last.p == 0.5 and model.backbone.stages[0][0].drop_path.p == 0.0  # linear in depth, 0 to the rate
    x = torch.ones(64, 1, 1, 1)
    kept = last(x)
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < (kept == 0).sum() < 64
    assert torch.equal(last.eval()(x), x)


def released_keys(depths: tuple[int, ...], classes: int) -> dict[str, tuple[int, ...]]:
    """The key names and shapes of a released UperNet-ConvNeXt state dict (widths 96-192-384-768, UperNet 512
    channels, aux head 256 on stage 3), restated from the reference's module layout."""
    dims, keys = (96, 192, 384, 768), {}

    def add(prefix, **shapes):
        keys.update({f"{prefix}.{k}": v for k, v in shapes.items()})

    def conv_bn(prefix, out_dim, in_dim, kernel):
        add(prefix + ".conv", weight=(out_dim, in_dim, kernel, kernel))
        add(
            prefix + ".batch_norm",
            weight=(out_dim,),
            bias=(out_dim,),
            running_mean=(out_dim,),
            running_var=(out_dim,),
            num_batches_tracked=(),
        )

    stem = "backbone.downsample_layers.0.stem"
    add(stem + ".0", weight=(48, 3, 3, 3), bias=(48,))
    add(stem + ".1", weight=(48,), bias=(48,))
    add(stem + ".3", weight=(96, 48, 3, 3), bias=(96,))
    add(stem + ".4", weight=(96,), bias=(96,))
    for i in (1, 2, 3):
        add(f"backbone.downsample_layers.{i}.0", weight=(dims[i - 1],), bias=(dims[i - 1],))
        add(f"backbone.downsample_layers.{i}.1", weight=(dims[i], dims[i - 1], 2, 2), bias=(dims[i],))
    for i, (depth, d) in enumerate(zip(depths, dims)):
        for j in range(depth):
            k = f"backbone.stages.{i}.{j}"
            add(k, gamma=(d,))
            add(k + ".dwconv", weight=(d, 1, 7, 7), bias=(d,))
            add(k + ".norm", weight=(d,), bias=(d,))
            add(k + ".pwconv1", weight=(4 * d, d), bias=(4 * d,))
            add(k + ".pwconv2", weight=(d, 4 * d), bias=(d,))
        add(f"backbone.norm{i}", weight=(d,), bias=(d,))
    for k in range(4):
        conv_bn(f"decode_head.psp_modules.{k}.1", 512, 768, 1)
    conv_bn("decode_head.bottleneck", 512, 768 + 4 * 512, 3)
    for i in range(3):
        conv_bn(f"decode_head.lateral_convs.{i}", 512, dims[i], 1)
        conv_bn(f"decode_head.fpn_convs.{i}", 512, 512, 3)
    conv_bn("decode_head.fpn_bottleneck", 512, 4 * 512, 3)
    add("decode_head.classifier", weight=(classes, 512, 1, 1), bias=(classes,))
    conv_bn("auxiliary_head.convs.0", 256, 384, 3)
    add("auxiliary_head.classifier", weight=(classes, 256, 1, 1), bias=(classes,))
    return keys


@pytest.mark.parametrize(
    "name,depths", [("upernet_convnext_t_cvst", (3, 3, 9, 3)), ("upernet_convnext_s_cvst", (3, 3, 27, 3))]
)
@pytest.mark.parametrize("classes", [21, 151])
def test_the_released_key_list_loads_strictly(name, depths, classes):
    expected = released_keys(depths, classes)
    with torch.device("meta"):
        model = MODELS.get(name)(name, classes)
        state = {
            k: torch.empty(shape, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float)
            for k, shape in expected.items()
        }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    model.load_state_dict(state, strict=True, assign=True)


def test_a_config_names_the_model_and_its_unsupported_options_are_one_line():
    cfg = load_config(
        "config/synthetic/synthetic_pspnet18.yaml", ["model", "upernet_convnext_t_cvst", "pretrained", "False"]
    )
    with torch.device("meta"):
        assert isinstance(model_from_config(cfg), UperNetConvNeXt)
    unsupported = "model 'upernet_convnext_t_cvst' starts from a revisiting-at ImageNet file given as init_path"
    with pytest.raises(UserError, match=unsupported), torch.device("meta"):
        model_from_config(cfg, pretrained=True)
    cfg.separable_conv = True
    with pytest.raises(UserError, match="separable_conv is VainF's DeepLabV3\\+ option"), torch.device("meta"):
        model_from_config(cfg)


def test_a_checkpoint_of_another_size_or_class_count_is_named_in_one_line(tmp_path):
    """A file for 151 classes (ADE20K) given to a 21-class model: the error names the model that fits it, and the
    config of a PIR-AT release by its file name; depths no name builds are said to be so."""
    path = tmp_path / "UperNet_ConvNext_T_ADE.pth"
    demo = MODELS.get("upernet_convnext_demo")
    torch.save(demo("upernet_convnext_demo", 151).state_dict(), path)
    load_checkpoint_weights(demo("upernet_convnext_demo", 151), str(path))  # a bare state dict, strictly
    with pytest.raises(UserError) as err:
        load_checkpoint_weights(demo("upernet_convnext_demo", 21), str(path))
    assert "\n" not in str(err.value)
    assert str(err.value).endswith(
        "looks like PIR-AT UperNet-ConvNeXt: set model upernet_convnext_demo classes 151 (PIR-AT's "
        "UperNet_ConvNext_T_ADE.pth runs with config/ade20k/ade20k_upernet_convnext_t_pirat.yaml)"
    )
    torch.save(UperNetConvNeXt(21, **TINY).state_dict(), tmp_path / "other.pth")
    with pytest.raises(
        UserError, match="like a UperNet-ConvNeXt of depths \\(1, 1, 2, 1\\), width 8 and the conv stem"
    ):
        load_checkpoint_weights(demo("upernet_convnext_demo", 21), str(tmp_path / "other.pth"))
    torch.save(MODELS.get("upernet_convnext_t")("upernet_convnext_t", 21).state_dict(), tmp_path / "patch.pth")
    with pytest.raises(UserError, match="looks like PIR-AT UperNet-ConvNeXt: set model upernet_convnext_t classes 21"):
        load_checkpoint_weights(demo("upernet_convnext_demo", 21), str(tmp_path / "patch.pth"))
