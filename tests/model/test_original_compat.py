"""Checkpoints in the original release's layout load and give the logits the original model code computes.

The reference below restates, with functional ops on a raw state dict, the eval forward of semseg's /
DDC-AT's ``PSPNet`` (ResNet-50 deep stem, layer3/layer4 conv2 patched to dilation 2/4 and stride 1,
PPM bins 1/2/3/6, ``cls`` = 3x3 conv, BN, ReLU, dropout, 1x1 conv, bilinear upsampling with
align_corners=True). It shares no code with ``model/``, so a wrong key mapping or layer order fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import build_model, load_checkpoint_weights
from util.errors import UserError

CLASSES = 3
BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
# (stride of the first block, dilation of every conv2) after the original's dilation patch.
STAGE = {"layer1": (1, 1), "layer2": (2, 1), "layer3": (1, 2), "layer4": (1, 4)}


def _bn(x: torch.Tensor, s: dict, key: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        s[f"{key}.running_mean"],
        s[f"{key}.running_var"],
        s[f"{key}.weight"],
        s[f"{key}.bias"],
        training=False,
        eps=1e-5,
    )


def _conv_bn_relu(x, s, conv, bn, stride=1, padding=0, dilation=1, relu=True):
    x = _bn(F.conv2d(x, s[f"{conv}.weight"], None, stride, padding, dilation), s, bn)
    return F.relu(x) if relu else x


def original_pspnet_logits(s: dict[str, torch.Tensor], x: torch.Tensor, head: str = "cls") -> torch.Tensor:
    """semseg's PSPNet-50 eval forward (zoom_factor 8) from a state dict in the release's key layout."""
    h, w = x.shape[-2:]
    y = _conv_bn_relu(x, s, "layer0.0", "layer0.1", stride=2, padding=1)
    y = _conv_bn_relu(y, s, "layer0.3", "layer0.4", padding=1)
    y = _conv_bn_relu(y, s, "layer0.6", "layer0.7", padding=1)
    y = F.max_pool2d(y, 3, stride=2, padding=1)
    for layer, blocks in BLOCKS.items():
        first_stride, dilation = STAGE[layer]
        for b in range(blocks):
            p = f"{layer}.{b}"
            stride = first_stride if b == 0 else 1
            out = _conv_bn_relu(y, s, f"{p}.conv1", f"{p}.bn1")
            out = _conv_bn_relu(out, s, f"{p}.conv2", f"{p}.bn2", stride, dilation, dilation)
            out = _conv_bn_relu(out, s, f"{p}.conv3", f"{p}.bn3", relu=False)
            identity = y
            if f"{p}.downsample.0.weight" in s:
                identity = _conv_bn_relu(y, s, f"{p}.downsample.0", f"{p}.downsample.1", stride, relu=False)
            y = F.relu(out + identity)
    pooled = [y]
    for i, bin_size in enumerate((1, 2, 3, 6)):
        z = _conv_bn_relu(F.adaptive_avg_pool2d(y, bin_size), s, f"ppm.features.{i}.1", f"ppm.features.{i}.2")
        pooled.append(F.interpolate(z, y.shape[-2:], mode="bilinear", align_corners=True))
    y = torch.cat(pooled, 1)
    y = _conv_bn_relu(y, s, f"{head}.0", f"{head}.1", padding=1)
    y = F.conv2d(y, s[f"{head}.4.weight"], s[f"{head}.4.bias"])
    return F.interpolate(y, (h, w), mode="bilinear", align_corners=True)


def _randomised(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with random BN statistics and affine parameters (so BN matters)."""
    torch.manual_seed(0)
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
        elif key.endswith(("running_mean", ".bias")):
            state[key] = 0.1 * torch.randn_like(value)
        elif value.dtype.is_floating_point and value.dim() == 1:
            state[key] = 1 + 0.1 * torch.randn_like(value)
    net.load_state_dict(state)
    return state


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 25, 33)


def _save_original(path, state: dict[str, torch.Tensor], prefix: str = "module.") -> None:
    """A checkpoint as the original train scripts wrote it (DataParallel/DDP keys, epoch, optimizer)."""
    torch.save(
        {
            "epoch": 50,
            "state_dict": {prefix + k: v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]},
        },
        path,
    )


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_original_pspnet_checkpoint_gives_original_logits(tmp_path, image, prefix) -> None:
    source = build_model("psp", 50, CLASSES).eval()
    state = _randomised(source)
    _save_original(tmp_path / "train_epoch_50.pth", state, prefix)
    net = build_model("psp", 50, CLASSES).eval()
    checkpoint = load_checkpoint_weights(net, str(tmp_path / "train_epoch_50.pth"))
    assert checkpoint["epoch"] == 50
    with torch.no_grad():
        expected = original_pspnet_logits(state, image)
        assert torch.allclose(net(image), expected, atol=1e-4, rtol=1e-4)
        # The reference is sensitive to what it checks: a swapped PPM branch changes the logits.
        swapped = dict(state)
        swapped["ppm.features.0.1.weight"], swapped["ppm.features.1.1.weight"] = (
            state["ppm.features.1.1.weight"],
            state["ppm.features.0.1.weight"],
        )
        assert not torch.allclose(original_pspnet_logits(swapped, image), expected, atol=1e-3)


def test_original_ddcat_checkpoint_both_directions(tmp_path, image) -> None:
    """A DDC-AT release checkpoint (cls1/cls2/mask1/aux_cls1) loads into the plain model through cls1,
    and into the DDC-AT model unchanged; a plain checkpoint starts both DDC-AT heads from cls."""
    ddcat = build_model("psp", 50, CLASSES, ddcat=True).eval()
    state = _randomised(ddcat)
    assert {k.split(".")[0] for k in state} >= {"cls1", "cls2", "mask1", "aux_cls1"}
    _save_original(tmp_path / "ddcat.pth", state)

    plain = build_model("psp", 50, CLASSES).eval()
    load_checkpoint_weights(plain, str(tmp_path / "ddcat.pth"))
    again = build_model("psp", 50, CLASSES, ddcat=True).eval()
    load_checkpoint_weights(again, str(tmp_path / "ddcat.pth"))
    with torch.no_grad():
        expected = original_pspnet_logits(state, image, head="cls1")
        assert torch.allclose(plain(image), expected, atol=1e-4, rtol=1e-4)
        assert torch.allclose(again(image), expected, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())

    plain_state = plain.state_dict()
    _save_original(tmp_path / "plain.pth", plain_state)
    fresh = build_model("psp", 50, CLASSES, ddcat=True)
    mask_before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("mask1.")}
    load_checkpoint_weights(fresh, str(tmp_path / "plain.pth"))
    loaded = fresh.state_dict()
    for key, value in plain_state.items():
        if key.startswith("cls."):
            assert torch.equal(loaded["cls1." + key[4:]], value) and torch.equal(loaded["cls2." + key[4:]], value)
        elif key.startswith("aux."):
            assert torch.equal(loaded["aux_cls1." + key[4:]], value)
    assert all(torch.equal(loaded[k], v) for k, v in mask_before.items())


def test_original_checkpoint_for_other_classes_names_the_shapes(tmp_path) -> None:
    state = build_model("psp", 50, 21).state_dict()
    _save_original(tmp_path / "voc.pth", state)
    with pytest.raises(UserError, match=r"cls\.4\.weight.*21"):
        load_checkpoint_weights(build_model("psp", 50, CLASSES), str(tmp_path / "voc.pth"))


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["checkpoint", "state_dict value"])
def test_pickled_code_payload_is_refused_and_never_runs(tmp_path, where) -> None:
    marker = tmp_path / "pwned"
    net = build_model("psp", 18, CLASSES)
    state = dict(net.state_dict())
    content = {"epoch": 1, "state_dict": state}
    if where == "checkpoint":
        content["optimizer"] = _Payload(str(marker))
    else:
        state["cls.4.bias"] = _Payload(str(marker))
    torch.save(content, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint_weights(net, str(tmp_path / "evil.pth"))
    assert not marker.exists()
    # The same object unpickled without the safety net does run: the test's payload is real.
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()
