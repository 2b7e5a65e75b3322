"""DeepLabV3+ and the MobileNetV2 backbone: shapes, dilation, parameter groups, DDC-AT, ImageNet init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model import build_model, load_checkpoint_weights
from model.mobilenetv2 import MobileNetV2
from util.errors import UserError

BACKBONES = ("resnet", "mobilenetv2")


def _plus(backbone: str, classes: int = 3, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model("deeplabv3plus", 18, classes, backbone=backbone, **kwargs)


def _trunk_first_and_last(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    if hasattr(model, "layer0"):
        return model.layer0[0], model.layer4[1].conv2
    return model.backbone.features[0][0], model.backbone.features[17].conv[2]


@pytest.mark.parametrize("output_stride", (8, 16))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_eval_and_train(backbone: str, output_stride: int) -> None:
    model = _plus(backbone, classes=5, output_stride=output_stride).eval()
    with torch.no_grad():
        for size in ((33, 33), (50, 70)):
            out = model(torch.randn(1, 3, *size))
            assert isinstance(out, torch.Tensor) and out.shape == (1, 5, *size)
    model.train()
    out = model(torch.randn(2, 3, 33, 33))
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 5, 33, 33)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_no_aux(backbone: str) -> None:
    model = _plus(backbone, use_aux=False).train()
    out = model(torch.randn(2, 3, 33, 33))
    assert set(out) == {"out"} and out["out"].shape == (2, 3, 33, 33)
    assert model.head_modules() == [model.decoder, model.cls]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backward_reaches_backbone_decoder_and_aux(backbone: str) -> None:
    model = _plus(backbone).train()
    out = model(torch.randn(2, 3, 33, 33))
    (out["out"].sum() + out["aux"].sum()).backward()
    decoder = model.decoder
    for module in (
        *_trunk_first_and_last(model),
        decoder.aspp.convs[4][1],
        decoder.project[0],
        decoder.low_project[0],
        decoder.fuse[0],
        model.cls[0],
        model.aux[0],
    ):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ddcat_variant(backbone: str) -> None:
    model = _plus(backbone, ddcat=True).train()
    out = model(torch.randn(2, 3, 33, 33))
    assert set(out) == {"out", "mask", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 3, 33, 33)
    assert out["mask"].shape == (2, 2, 33, 33)
    model.eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        logits = model(x)
        cls1 = model.upsample(model.cls1(model.features(x)[1]), (50, 70))
    assert torch.equal(logits, cls1)
    assert model.cls2[0].weight.shape == model.cls1[0].weight.shape == (256, 256, 3, 3)
    assert model.mask1[4].weight.shape == (2, 256, 1, 1)


@pytest.mark.parametrize("ddcat", (False, True))
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("arch", ("aspp", "deeplabv3plus"))
def test_backbone_and_head_modules_partition_parameters(arch: str, backbone: str, ddcat: bool) -> None:
    model = build_model(arch, 18, 3, backbone=backbone, ddcat=ddcat)
    ids = [id(p) for group in (model.backbone_modules(), model.head_modules()) for m in group for p in m.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    trunk = {id(p) for m in model.backbone_modules() for p in m.parameters()}
    prefixes = ("layer",) if backbone == "resnet" else ("backbone.",)
    assert trunk == {id(p) for name, p in model.named_parameters() if name.startswith(prefixes)}


def test_state_dict_keys() -> None:
    resnet = _plus("resnet").state_dict()
    assert {k.split(".")[0] for k in resnet} == {
        "layer0",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "decoder",
        "cls",
        "aux",
    }
    assert resnet["decoder.low_project.0.weight"].shape == (48, 64, 1, 1)  # ResNet-18 layer1
    assert resnet["decoder.aspp.convs.1.0.weight"].shape == (256, 512, 3, 3)
    mobile = _plus("mobilenetv2").state_dict()
    assert {k.split(".")[0] for k in mobile} == {"backbone", "decoder", "cls", "aux"}
    for state in (resnet, mobile):
        assert state["decoder.project.0.weight"].shape == (256, 1280, 1, 1)
        assert state["decoder.fuse.0.weight"].shape == (256, 304, 3, 3)
        assert state["cls.0.weight"].shape == (256, 256, 3, 3)
        assert state["cls.4.weight"].shape == (3, 256, 1, 1)
    assert mobile["backbone.features.0.0.weight"].shape == (32, 3, 3, 3)
    assert mobile["backbone.features.1.conv.1.weight"].shape == (16, 32, 1, 1)
    assert mobile["backbone.features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert mobile["decoder.low_project.0.weight"].shape == (48, 24, 1, 1)
    assert mobile["decoder.aspp.convs.0.0.weight"].shape == (256, 320, 1, 1)
    assert mobile["aux.0.weight"].shape == (256, 96, 1, 1)
    assert not any(k.startswith("backbone.features.18") for k in mobile)


@pytest.mark.parametrize(("output_stride", "rates"), ((8, 12), (16, 6)))
def test_default_atrous_rates(output_stride: int, rates: int) -> None:
    model = _plus("mobilenetv2", output_stride=output_stride)
    dilations = [model.decoder.aspp.convs[i][0].dilation[0] for i in (1, 2, 3)]
    assert dilations == [rates, 2 * rates, 3 * rates]


def test_mobilenetv2_matches_torchvision_size() -> None:
    # torchvision's mobilenet_v2: 3,504,872 parameters, less features.18 (412,160) and the
    # classifier (1,281,000).
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 1_811_712


@pytest.mark.parametrize("output_stride", (8, 16, 32))
def test_mobilenetv2_feature_sizes(output_stride: int) -> None:
    with torch.no_grad():
        feats = MobileNetV2(output_stride).eval()(torch.randn(1, 3, 65, 97))
    mid_stride = min(output_stride, 16)
    assert feats["low"].shape == (1, 24, 17, 25)
    assert feats["mid"].shape == (1, 96, math.ceil(65 / mid_stride), math.ceil(97 / mid_stride))
    assert feats["high"].shape == (1, 320, math.ceil(65 / output_stride), math.ceil(97 / output_stride))


def _depthwise(net: MobileNetV2, index: int) -> nn.Conv2d:
    block = net.features[index].conv
    return block[0][0] if len(block) == 3 else block[1][0]


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    (
        # block index -> (stride, dilation) of its depthwise conv
        (16, {4: (2, 1), 7: (2, 1), 11: (1, 1), 14: (1, 1), 15: (1, 2), 17: (1, 2)}),
        (8, {4: (2, 1), 7: (1, 1), 8: (1, 2), 11: (1, 2), 13: (1, 2), 14: (1, 2), 15: (1, 4), 17: (1, 4)}),
    ),
)
def test_mobilenetv2_dilation(output_stride: int, expected: dict[int, tuple[int, int]]) -> None:
    net = MobileNetV2(output_stride)
    for index, (stride, dilation) in expected.items():
        conv = _depthwise(net, index)
        assert conv.stride == (stride, stride), index
        assert conv.dilation == conv.padding == (dilation, dilation), index


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="output_stride"):
        MobileNetV2(4)
    with pytest.raises(UserError, match="backbone must be one of .*, got 'vgg'"):
        build_model("deeplabv3plus", 18, 3, backbone="vgg")
    with pytest.raises(ValueError, match="zoom_factor"):
        build_model("deeplabv3plus", 18, 3, zoom_factor=3, backbone="mobilenetv2")


@pytest.mark.parametrize("arch", ("psp", "aspp"))
def test_other_archs_on_mobilenetv2(arch: str) -> None:
    model = build_model(arch, 50, 4, output_stride=16, backbone="mobilenetv2").train()
    out = model(torch.randn(2, 3, 33, 33))
    assert out["out"].shape == out["aux"].shape == (2, 4, 33, 33)
    assert model.layers is None and not hasattr(model, "layer0")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 4, 50, 70)


def _torchvision_init_file(tmp_path, **replace: torch.Tensor) -> tuple[str, dict]:
    """A MobileNetV2 state dict in torchvision's format: with features.18 and the classifier, and,
    like the released file, without BN's num_batches_tracked."""
    torch.manual_seed(1)
    state = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in MobileNetV2().state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    state["features.18.0.weight"] = torch.randn(1280, 320, 1, 1)
    for name in ("weight", "bias", "running_mean", "running_var"):
        state[f"features.18.1.{name}"] = torch.randn(1280)
    state["classifier.1.weight"] = torch.randn(1000, 1280)
    state["classifier.1.bias"] = torch.randn(1000)
    state.update(replace)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    return str(path), state


@pytest.mark.parametrize("arch", ("aspp", "deeplabv3plus"))
def test_mobilenetv2_init_loads(tmp_path, arch: str) -> None:
    path, state = _torchvision_init_file(tmp_path)
    model = build_model(arch, 50, 3, backbone="mobilenetv2", pretrained=True, init_path=path)
    loaded = model.state_dict()
    for key in (
        "features.0.0.weight",
        "features.0.1.running_var",
        "features.1.conv.0.0.weight",
        "features.17.conv.2.weight",
        "features.17.conv.3.bias",
    ):
        assert torch.equal(loaded[f"backbone.{key}"], state[key]), key


def test_mobilenetv2_init_accepts_wrapped_and_prefixed(tmp_path) -> None:
    path, state = _torchvision_init_file(tmp_path)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = _plus("mobilenetv2", pretrained=True, init_path=path)
    assert torch.equal(model.backbone.features[5].conv[1][0].weight, state["features.5.conv.1.0.weight"])


def test_mobilenetv2_init_wrong_shape(tmp_path) -> None:
    path, _ = _torchvision_init_file(tmp_path, **{"features.17.conv.2.weight": torch.zeros(160, 960, 1, 1)})
    with pytest.raises(UserError, match=r"features\.17\.conv\.2\.weight") as info:
        _plus("mobilenetv2", pretrained=True, init_path=path)
    assert "MobileNetV2" in str(info.value) and "\n" not in str(info.value)


def test_mobilenetv2_init_missing_key(tmp_path) -> None:
    path, state = _torchvision_init_file(tmp_path)
    del state["features.3.conv.1.0.weight"]
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing keys \[features\.3\.conv\.1\.0\.weight\]"):
        _plus("mobilenetv2", pretrained=True, init_path=path)


def test_mobilenetv2_init_missing_file(tmp_path) -> None:
    path = str(tmp_path / "nowhere" / "mobilenet_v2.pth")
    with pytest.raises(UserError, match="pretrained: False") as info:
        _plus("mobilenetv2", pretrained=True, init_path=path)
    assert path in str(info.value)


def test_ddcat_checkpoint_loads_into_plain_mobilenetv2_model(tmp_path) -> None:
    trained = _plus("mobilenetv2", ddcat=True)
    path = tmp_path / "train_epoch_1.pth"
    torch.save({"epoch": 1, "state_dict": trained.state_dict()}, path)
    plain = build_model("deeplabv3plus", 18, 3, backbone="mobilenetv2")
    load_checkpoint_weights(plain, str(path))
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), trained.eval()(x))
