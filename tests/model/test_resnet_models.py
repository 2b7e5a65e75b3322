"""Model tests: shapes, dilation, checkpoint key names, ImageNet init, checkpoint loading."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from model import DeepLabV3, PSPNet, build_model, load_checkpoint_weights
from model.checkpoint import STEM_TO_LAYER0
from model.resnet import resnet
from util.errors import UserError

ARCHS = ("psp", "aspp")


@functools.cache
def _model50(arch: str) -> nn.Module:
    """ResNet-50 models are shared by the read-only tests (built once, ~1 s each)."""
    torch.manual_seed(0)
    return build_model(arch, 50, classes=21).eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layers", (18, 34))
def test_shallow_shapes_eval_and_train(arch: str, layers: int) -> None:
    model = build_model(arch, layers, classes=5)
    x = torch.randn(2, 3, 33, 33)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 33, 33)
    model.train()
    out = model(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 5, 33, 33)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layers", (50, 101, 152))
def test_deep_shapes_eval(arch: str, layers: int) -> None:
    model = _model50(arch) if layers == 50 else build_model(arch, layers, classes=21).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 33))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 21, 33, 33)


def test_backward_reaches_backbone_and_aux() -> None:
    model = DeepLabV3(layers=18, classes=3).train()
    out = model(torch.randn(2, 3, 33, 33))
    (out["out"].sum() + out["aux"].sum()).backward()
    for module in (model.layer0[0], model.layer4[1].conv2, model.aux[0], model.aspp.convs[4][1]):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_train_mode_dict_and_no_aux() -> None:
    model = PSPNet(layers=18, classes=3, use_aux=False).train()
    out = model(torch.randn(2, 3, 33, 33))
    assert set(out) == {"out"} and out["out"].shape == (2, 3, 33, 33)
    assert model.head_modules() == [model.ppm, model.cls]


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_skips_aux(arch: str) -> None:
    model = build_model(arch, 18, classes=3).eval()
    calls = []
    model.aux.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 33))
    assert isinstance(out, torch.Tensor) and calls == []
    model.train()
    model(torch.randn(2, 3, 33, 33))
    assert calls == [1]


@pytest.mark.parametrize("zoom", (1, 2, 4, 8))
def test_zoom_factor_sizes(zoom: int) -> None:
    model = PSPNet(layers=18, classes=3, zoom_factor=zoom).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 41))
    assert out.shape == (1, 3, (65 - 1) // 8 * zoom + 1, (41 - 1) // 8 * zoom + 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_zoom8_any_size(arch: str) -> None:
    model = build_model(arch, 18, classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 4, 50, 70)
        assert model(torch.randn(1, 3, 32, 47)).shape == (1, 4, 32, 47)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="depth"):
        resnet(42)
    with pytest.raises(ValueError, match="output_stride"):
        resnet(18, output_stride=4)
    with pytest.raises(ValueError, match="zoom_factor"):
        PSPNet(layers=18, zoom_factor=3)
    with pytest.raises(UserError, match=r"arch must be one of \['psp', 'aspp', 'deeplabv3plus'\], got 'unet'"):
        build_model("unet", 18, classes=2)


@pytest.mark.parametrize("output_stride", (8, 16, 32))
def test_output_stride_feature_size(output_stride: int) -> None:
    net = resnet(18, output_stride=output_stride).eval()
    with torch.no_grad():
        feat = net(torch.randn(1, 3, 65, 97))
    assert feat.shape == (1, 512, math.ceil(65 / output_stride), math.ceil(97 / output_stride))


def test_output_stride_dilations_bottleneck() -> None:
    os8 = _model50("psp")
    for name, dilation in (("layer3", 2), ("layer4", 4)):
        for block in getattr(os8, name):
            assert block.conv2.dilation == (dilation, dilation)
            assert block.conv2.padding == (dilation, dilation)
            assert block.conv2.stride == (1, 1)
        assert getattr(os8, name)[0].downsample[0].stride == (1, 1)
    assert os8.layer2[0].conv2.stride == (2, 2) and os8.layer2[0].downsample[0].stride == (2, 2)

    os16 = resnet(50, output_stride=16)
    assert os16.layer3[0].conv2.stride == (2, 2) and os16.layer3[0].conv2.dilation == (1, 1)
    assert os16.layer3[0].downsample[0].stride == (2, 2)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.stride == (1, 1) for b in os16.layer4)
    assert os16.layer4[0].downsample[0].stride == (1, 1)
    assert os16.channels == (1024, 2048)


def test_output_stride_dilations_basic() -> None:
    net = resnet(18, output_stride=8)
    assert net.channels == (256, 512)
    for name, dilation in (("layer3", 2), ("layer4", 4)):
        for block in getattr(net, name):
            for conv in (block.conv1, block.conv2):
                assert conv.dilation == (dilation, dilation) and conv.stride == (1, 1)
        assert getattr(net, name)[0].downsample[0].stride == (1, 1)
    # The deep stem has 128 channels, so layer1 of ResNet-18 needs a projection to 64.
    assert net.layer1[0].downsample[0].weight.shape == (64, 128, 1, 1)


def test_pspnet50_state_dict_keys() -> None:
    state = _model50("psp").state_dict()
    for key in (
        "layer0.0.weight",
        "layer0.1.running_mean",
        "layer0.3.weight",
        "layer0.6.weight",
        "layer1.0.conv1.weight",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "ppm.features.0.1.weight",
        "ppm.features.3.2.weight",
        "cls.0.weight",
        "cls.1.weight",
        "cls.4.weight",
        "cls.4.bias",
        "aux.0.weight",
        "aux.4.weight",
    ):
        assert key in state, key
    assert state["cls.0.weight"].shape == (512, 4096, 3, 3)
    assert state["aux.0.weight"].shape == (256, 1024, 3, 3)
    assert state["cls.4.weight"].shape == (21, 512, 1, 1)
    assert {k.split(".")[0] for k in state} == {"layer0", "layer1", "layer2", "layer3", "layer4", "ppm", "cls", "aux"}


def test_deeplabv3_50_state_dict_keys() -> None:
    model = _model50("aspp")
    state = model.state_dict()
    assert state["aspp.convs.0.0.weight"].shape == (256, 2048, 1, 1)
    assert state["aspp.convs.1.0.weight"].shape == (256, 2048, 3, 3)
    assert "aspp.convs.4.1.weight" in state
    assert state["cls.0.weight"].shape == (256, 1280, 1, 1)
    assert state["aux.0.weight"].shape == (256, 1024, 1, 1)
    assert [model.aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(6, 6), (12, 12), (18, 18)]
    assert model.aspp.convs[1][0].padding == (6, 6)


@pytest.mark.parametrize("arch", ARCHS)
def test_only_last_head_convs_have_bias(arch: str) -> None:
    model = _model50(arch)
    with_bias = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
    assert with_bias == {"cls.4", "aux.4"}


def test_backbone_and_head_modules_partition_parameters() -> None:
    model = _model50("psp")
    ids = [id(p) for group in (model.backbone_modules(), model.head_modules()) for m in group for p in m.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def _semseg_init_file(tmp_path, **extra: torch.Tensor) -> tuple[str, dict[str, torch.Tensor]]:
    """Write a ResNet-50 state dict in semseg's ImageNet format (conv1/bn1/.../fc)."""
    torch.manual_seed(1)
    state = dict(resnet(50).state_dict())
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    state.update(extra)
    path = tmp_path / "resnet50_v2.pth"
    torch.save(state, path)
    return str(path), state


def test_imagenet_init_loads_backbone(tmp_path) -> None:
    path, state = _semseg_init_file(tmp_path)
    model = PSPNet(layers=50, classes=3, pretrained=True, init_path=path)
    loaded = model.state_dict()
    for stem, index in STEM_TO_LAYER0.items():
        assert torch.equal(loaded[f"layer0.{index}.weight"], state[f"{stem}.weight"])
    assert torch.equal(loaded["layer0.1.running_var"], state["bn1.running_var"])
    for key in ("layer4.2.conv3.weight", "layer4.0.downsample.1.running_mean", "layer1.0.conv2.weight"):
        assert torch.equal(loaded[key], state[key])


def test_imagenet_init_accepts_wrapped_and_prefixed(tmp_path) -> None:
    path, state = _semseg_init_file(tmp_path)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}}
    torch.save(wrapped, path)
    model = DeepLabV3(layers=50, classes=3, pretrained=True, init_path=path)
    assert torch.equal(model.state_dict()["layer0.6.weight"], state["conv3.weight"])


def test_imagenet_init_missing_file(tmp_path) -> None:
    path = str(tmp_path / "nowhere" / "resnet50_v2.pth")
    with pytest.raises(UserError, match="pretrained: False") as info:
        PSPNet(layers=50, pretrained=True, init_path=path)
    assert path in str(info.value)


def test_imagenet_init_wrong_key(tmp_path) -> None:
    path, _ = _semseg_init_file(tmp_path, **{"layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(UserError, match=r"unexpected keys \[layer5\.0\.conv1\.weight\]"):
        PSPNet(layers=50, pretrained=True, init_path=path)


def test_imagenet_init_wrong_depth_names_file_keys(tmp_path) -> None:
    path, _ = _semseg_init_file(tmp_path)
    with pytest.raises(UserError, match="ResNet-18") as info:
        PSPNet(layers=18, pretrained=True, init_path=path)
    assert "shape mismatch" in str(info.value) and "layer0." not in str(info.value)


def _small_model(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model("psp", 18, classes=classes)


def test_checkpoint_round_trip_with_module_prefix(tmp_path) -> None:
    model = _small_model()
    path = tmp_path / "train_epoch_1.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 7, "state_dict": state}, path)
    other = _small_model()
    for p in other.parameters():
        nn.init.zeros_(p)
    checkpoint = load_checkpoint_weights(other, str(path))
    assert checkpoint["epoch"] == 7
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_checkpoint_bare_state_dict(tmp_path) -> None:
    model = _small_model()
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    checkpoint = load_checkpoint_weights(_small_model(), str(path))
    assert set(checkpoint) == {"state_dict", "format"} and checkpoint["format"] == "bare state dict"


def test_checkpoint_wrong_classes(tmp_path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": _small_model(classes=3).state_dict()}, path)
    with pytest.raises(UserError, match="cls.4.weight") as info:
        load_checkpoint_weights(_small_model(classes=5), str(path))
    message = str(info.value)
    assert "(3, 512, 1, 1) vs (5, 512, 1, 1)" in message and "\n" not in message
    assert message.endswith("looks like semseg/DDC-AT psp: set model empty, arch psp layers 18 classes 3")


def test_checkpoint_missing_and_unexpected_keys(tmp_path) -> None:
    path = tmp_path / "ckpt.pth"
    state = _small_model().state_dict()
    del state["ppm.features.0.1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(
        UserError,
        match=r"keys 1 missing \(ppm\.features\.0\.1\.weight, \.\.\.\), 1 unexpected "
        r"\(extra\.weight, \.\.\.\)",
    ):
        load_checkpoint_weights(_small_model(), str(path))
    assert load_checkpoint_weights(_small_model(), str(path), strict=False)


def test_checkpoint_missing_or_unreadable_file(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_checkpoint_weights(_small_model(), str(tmp_path / "absent.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a loadable torch checkpoint"):
        load_checkpoint_weights(_small_model(), str(junk))
