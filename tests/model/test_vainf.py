"""VainF's DeepLabV3 / DeepLabV3+ (SAM-AT's models): each model against a functional restatement of VainF's
computation written here from its published description (torchvision ResNet with replace_stride_with_dilation,
MobileNetV2 with fixed padding before each block, VainF's ASPP and heads), reading the parameters by VainF's
names; and VainF/SAM-AT checkpoints load strictly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.inference import Protocol
from model import build_model, load_checkpoint_weights
from model.checkpoint import load_vainf_init
from model.registry import MODELS
from model.vainf import NAMES, VainFDeepLab
from tests.conftest import ROOT
from tests.entry import test_entry, train_entry
from util.errors import UserError

STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def bn(s, p, x):
    return F.batch_norm(
        x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"], False, 0.0, 1e-5
    )


def conv(s, p, x, stride=1, padding=0, dilation=1, groups=1, separable=False):
    """A conv by VainF's key ``p``; with ``separable`` the V3+ head's depthwise + pointwise pair (``p.body.0/1``)."""
    if separable:
        dw = s[p + ".body.0.weight"]
        x = F.conv2d(x, dw, None, stride, padding, dilation, groups=dw.shape[0])
        return F.conv2d(x, s[p + ".body.1.weight"])
    return F.conv2d(x, s[p + ".weight"], s.get(p + ".bias"), stride, padding, dilation, groups)


def cbr(s, p, x, **kw):
    return F.relu(bn(s, p + ".1", conv(s, p + ".0", x, **kw)))


def resnet(s, x, depth, os):
    x = F.relu(bn(s, "backbone.bn1", conv(s, "backbone.conv1", x, 2, 3)))
    x = F.max_pool2d(x, 3, 2, 1)
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    dilated = {8: (False, True, True), 16: (False, False, True)}[os]
    dilation, low = 1, None
    for layer, n in enumerate(blocks, start=1):
        stride, first_dilation = (1 if layer == 1 else 2), dilation  # a dilated layer's first block: the old one
        if layer > 1 and dilated[layer - 2]:
            dilation, stride = dilation * 2, 1
        for i in range(n):
            p = f"backbone.layer{layer}.{i}"
            d = first_dilation if i == 0 else dilation
            out = F.relu(bn(s, p + ".bn1", conv(s, p + ".conv1", x)))
            out = F.relu(bn(s, p + ".bn2", conv(s, p + ".conv2", out, stride if i == 0 else 1, d, d)))
            out = bn(s, p + ".bn3", conv(s, p + ".conv3", out))
            skip = bn(s, p + ".downsample.1", conv(s, p + ".downsample.0", x, stride)) if i == 0 else x
            x = F.relu(out + skip)
        if layer == 1:
            low = x
    return low, x


def mobilenet(s, x, os):
    relu6 = lambda p, x, **kw: F.relu6(bn(s, p + ".1", conv(s, p + ".0", x, **kw)))  # noqa: E731
    x = relu6("backbone.low_level_features.0", x, stride=2)
    index, current, dilation, in_dim, low = 1, 2, 1, 32, None
    for t, c, n, st in STAGES:
        previous = dilation
        if current == os:
            stride, dilation = 1, dilation * st
        else:
            stride, current = st, current * st
        for i in range(n):
            part = "low_level_features" if index < 4 else "high_level_features"
            p = f"backbone.{part}.{index}.conv"
            d, hidden = (previous if i == 0 else dilation), in_dim * t
            y = F.pad(x, (d, d, d, d))
            k = 0
            if t != 1:
                y, k = relu6(f"{p}.0", y), 1
            y = relu6(f"{p}.{k}", y, stride=stride if i == 0 else 1, dilation=d, groups=hidden)
            y = bn(s, f"{p}.{k + 2}", conv(s, f"{p}.{k + 1}", y))
            x = x + y if (stride if i == 0 else 1) == 1 and in_dim == c else y
            in_dim, index = c, index + 1
            if index == 4:
                low = x
    return low, x


def aspp(s, p, x, rates, separable):
    branches = [cbr(s, f"{p}.convs.0", x)]
    branches += [
        cbr(s, f"{p}.convs.{i}", x, padding=r, dilation=r, separable=separable) for i, r in enumerate(rates, start=1)
    ]
    pooled = F.relu(bn(s, f"{p}.convs.4.2", conv(s, f"{p}.convs.4.1", F.adaptive_avg_pool2d(x, 1))))
    branches.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return cbr(s, f"{p}.project", torch.cat(branches, 1))


def vainf_forward(s, name, x, os, separable=False):
    head, backbone = name.split("_")
    low, high = mobilenet(s, x, os) if backbone == "mobilenet" else resnet(s, x, int(backbone[6:]), os)
    rates = (12, 24, 36) if os == 8 else (6, 12, 18)
    if head == "deeplabv3":
        y = aspp(s, "classifier.classifier.0", high, rates, False)
        y = conv(s, "classifier.classifier.4", cbr_at(s, "classifier.classifier", 1, y))
    else:
        low = cbr(s, "classifier.project", low)
        y = F.interpolate(
            aspp(s, "classifier.aspp", high, rates, separable),
            size=low.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        y = torch.cat([low, y], 1)
        y = F.relu(
            bn(s, "classifier.classifier.1", conv(s, "classifier.classifier.0", y, padding=1, separable=separable))
        )
        y = conv(s, "classifier.classifier.3", y)
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def cbr_at(s, p, i, x):
    """conv ``p.i`` (3x3, padding 1), BN ``p.i+1``, ReLU: DeepLabV3 head's layers after the ASPP."""
    return F.relu(bn(s, f"{p}.{i + 1}", conv(s, f"{p}.{i}", x, padding=1)))


def randomised(model):
    """Random BN statistics and affine parameters, so that a wrong BN or a skipped layer shows in the logits."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.double().eval()


CASES = [
    ("deeplabv3plus_mobilenet", 16, False),
    ("deeplabv3plus_mobilenet", 8, True),
    ("deeplabv3_mobilenet", 16, False),
    ("deeplabv3plus_resnet50", 16, False),
    ("deeplabv3_resnet50", 8, False),
    ("deeplabv3plus_resnet101", 8, True),
]


@pytest.mark.parametrize("name,os,separable", CASES)
def test_vainf_models_compute_what_vainf_computes(name, os, separable):
    model = randomised(VainFDeepLab(name, classes=3, output_stride=os, separable_conv=separable))
    x = torch.randn(1, 3, 35, 41, dtype=torch.float64)
    with torch.no_grad():
        ours = model(x)
        restated = vainf_forward(model.state_dict(), name, x, os, separable)
    assert ours.shape == (1, 3, 35, 41)
    assert torch.allclose(ours, restated, atol=1e-9, rtol=1e-7)


def test_vainf_names():
    """Every parameter name is VainF's: spot checks of each part's layout."""
    keys = set(VainFDeepLab("deeplabv3plus_mobilenet", 21).state_dict())
    assert {
        "backbone.low_level_features.0.0.weight",
        "backbone.low_level_features.1.conv.0.0.weight",
        "backbone.high_level_features.4.conv.0.0.weight",
        "backbone.high_level_features.17.conv.3.running_var",
        "classifier.project.0.weight",
        "classifier.aspp.convs.4.1.weight",
        "classifier.aspp.project.0.weight",
        "classifier.classifier.3.bias",
    } <= keys
    assert not any(k.startswith("backbone.high_level_features.18") for k in keys)
    keys = set(VainFDeepLab("deeplabv3_resnet101", 21).state_dict())
    assert {
        "backbone.conv1.weight",
        "backbone.layer3.22.conv3.weight",
        "backbone.layer4.0.downsample.1.weight",
        "classifier.classifier.0.convs.0.0.weight",
        "classifier.classifier.1.weight",
        "classifier.classifier.4.bias",
    } <= keys
    assert not any(k.startswith(("backbone.fc", "aux")) for k in keys)
    vainf = {name for name, builder in MODELS.items() if builder is VainFDeepLab}
    assert vainf == set(NAMES) and len(NAMES) == 6


def _vainf_checkpoint(path, model, module_prefix=True):
    """A checkpoint as VainF's / SAM-AT's main.py saves it (DataParallel: ``module.``)."""
    prefix = "module." if module_prefix else ""
    torch.save(
        {
            "cur_itrs": 30000,
            "model_state": {prefix + k: v for k, v in model.state_dict().items()},
            "optimizer_state": {"state": {}, "param_groups": []},
            "scheduler_state": {"last_epoch": 3},
            "best_score": 0.71,
        },
        path,
    )


@pytest.mark.parametrize("module_prefix", [True, False])
def test_vainf_checkpoints_load_strictly_and_give_the_same_logits(tmp_path, module_prefix):
    source = randomised(VainFDeepLab("deeplabv3plus_mobilenet", 4)).float()
    _vainf_checkpoint(tmp_path / "best.pth", source, module_prefix)
    target = VainFDeepLab("deeplabv3plus_mobilenet", 4).eval()
    checkpoint = load_checkpoint_weights(target, str(tmp_path / "best.pth"))
    assert checkpoint["format"] == "VainF/SAM-AT format" and checkpoint["cur_itrs"] == 30000
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_a_checkpoint_of_another_model_says_which_model_it_is(tmp_path):
    _vainf_checkpoint(tmp_path / "best.pth", VainFDeepLab("deeplabv3plus_mobilenet", 4, separable_conv=True))
    with pytest.raises(UserError) as err:
        load_checkpoint_weights(build_model("psp", 18, 4), str(tmp_path / "best.pth"))
    line = str(err.value)
    assert "\n" not in line and len(line) <= 300, line
    assert "(VainF/SAM-AT format)" in line and "keys 149 missing (layer0.0.weight, ...)" in line
    assert "looks like VainF deeplabv3plus_mobilenet: set model deeplabv3plus_mobilenet separable_conv True" in line
    torch.save({"state_dict": build_model("psp", 18, 4, ddcat=True).state_dict()}, tmp_path / "ddcat.pth")
    with pytest.raises(
        UserError,
        match=r"looks like semseg/DDC-AT psp: set model empty, arch psp layers 18 "
        r"defense ddcat",
    ):
        load_checkpoint_weights(VainFDeepLab("deeplabv3_resnet50", 4), str(tmp_path / "ddcat.pth"))


def test_torchvision_imagenet_files_initialise_the_backbone(tmp_path):
    """torchvision's layouts (ResNet with fc; MobileNetV2 features.0..18 and classifier), as VainF loads them."""
    mobile = VainFDeepLab("deeplabv3plus_mobilenet", 3)
    state = {
        k.split("_level_", 1)[1]: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in mobile.backbone.state_dict().items()
    }
    state.update({"features.18.0.weight": torch.randn(1280, 320, 1, 1), "classifier.1.weight": torch.randn(9, 1280)})
    torch.save(state, tmp_path / "mobilenet_v2.pth")
    load_vainf_init(mobile, str(tmp_path / "mobilenet_v2.pth"))
    assert torch.equal(mobile.backbone.high_level_features[13].conv[1][0].weight, state["features.17.conv.1.0.weight"])
    resnet = VainFDeepLab("deeplabv3_resnet50", 3)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in resnet.backbone.state_dict().items()}
    state.update({"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)})
    torch.save(state, tmp_path / "resnet50.pth")
    load_vainf_init(resnet, str(tmp_path / "resnet50.pth"))
    assert torch.equal(resnet.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match=r"missing keys \[layer1.0.conv1.weight\]"):
        load_vainf_init(resnet, str(tmp_path / "broken.pth"))


def test_a_vainf_model_trains_with_sam_at_adv_and_is_evaluated(run_cli, tiny_opts, tmp_path):
    """SAM-AT's --adv on VainF's model through train.py: every image, one L2 step of eps, crafted in train mode."""
    opts = [
        *tiny_opts,
        "model",
        "deeplabv3plus_mobilenet",
        "pretrained",
        "False",
        "epochs",
        "1",
        "model_path",
        str(tmp_path / "model/train_epoch_1.pth"),
    ]
    config = "config/synthetic/synthetic_pspnet18_sat.yaml"
    adv = ["defense", "pgd_at", "adv_steps", "1", "adv_eps", "0.5", "adv_norm", "l2", "adv_train_mode", "True"]
    code, out, err = run_cli(train_entry, ["--config", config, *opts, *adv])
    assert code == 0, err
    assert "defense pgd_at" in out
    state = torch.load(tmp_path / "model/train_epoch_1.pth", weights_only=True)["state_dict"]
    assert "classifier.aspp.convs.4.1.weight" in state and "backbone.high_level_features.17.conv.3.bias" in state
    code, _out, err = run_cli(test_entry, ["--config", config, "--attack", *opts])
    assert code == 0, err
    assert 0 <= json.loads((tmp_path / "result/bim/results.json").read_text())["mIoU"] <= 1
    code, _, err = run_cli(
        train_entry, ["--config", config, *opts, "defense", "ddcat", "save_path", str(tmp_path / "other")]
    )
    assert code == 2 and "without DDC-AT's heads" in err


def test_the_sam_at_recipe_config_trains_by_iterations(run_cli, tiny_opts, tmp_path):
    """config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml on the tiny set: iters cuts the last epoch (6
    iterations of 4 per epoch), the warm-up runs its own SGD, then SAM; the checkpoint says where it stopped."""
    opts = [*tiny_opts, "pretrained", "False", "iters", "6", "sam_warmup_iters", "3", "classes", "5"]
    config = "config/voc2012/voc2012_deeplabv3plus_mobilenet_sam.yaml"
    code, out, err = run_cli(train_entry, ["--config", config, *opts])
    assert code == 0, err
    assert "Epoch: [2/2][2/4]" in out and "Epoch: [2/2][3/4]" not in out
    checkpoint = torch.load(tmp_path / "model/train_epoch_2.pth", weights_only=True)
    assert checkpoint["iteration"] == 6 and "warmup" in checkpoint["optimizer"]
    assert checkpoint["config"]["head_lr_mult"] == 1.0 and checkpoint["config"]["min_lr"] == 1e-6
    assert checkpoint["config"]["augmentation"] == "vainf"  # VainF's crops fed the run


def test_sam_at_protocol_preset_runs_on_a_vainf_checkpoint(tiny_opts, tmp_path):
    """tool_test/voc2012/samat_eval.sh on a VainF/SAM-AT checkpoint: native resolution, whole image, the four
    PGD settings, VainF's mean over present classes in every row."""

    assert Protocol(5, 0, 33, 33).scaled_size(37, 53, 1.0) == (37, 53)
    _vainf_checkpoint(tmp_path / "best.pth", VainFDeepLab("deeplabv3plus_mobilenet", 5))
    pairs = dict(zip(tiny_opts[::2], tiny_opts[1::2]))
    del pairs["base_size"]  # the preset's native resolution
    pairs.update(
        classes="5",
        index_step="2",
        save_folder=str(tmp_path / "samat"),
        model_path=str(tmp_path / "best.pth"),
        names_path="dataset/synthetic/synthetic_names.txt",
        colors_path="dataset/synthetic/synthetic_colors.txt",
    )
    opts = [v for item in pairs.items() for v in item]
    exp_name = f"pytest-{os.getpid()}"
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": exp_name, "NPROC": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            ["sh", "tool_test/voc2012/samat_eval.sh", *opts],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        shutil.rmtree(ROOT / "exp/voc2012" / exp_name, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "samat/results.json").read_text())
    attacked = [m for m in result["modes"] if m["kind"] == "attack"]
    assert len(attacked) == 4 and all(m["attack"]["last_iterate"] for m in attacked)
    assert {m["attack"]["norm"] for m in attacked if "norm" in m["attack"]} == {"l2"}
    assert all(0 <= m["present_mIoU"] <= 1 and m["present_mIoU"] >= m["mIoU"] for m in result["modes"])
    assert result["config"]["base_size"] == 0 and result["config"]["eval_crop"] == "whole"


def test_a_sam_at_checkpoint_sees_the_input_sam_at_feeds_it(tmp_path):
    """rescale_normalized_input with SAM-AT's protocol (native resolution, whole image, no flip): our prediction of
    an image equals SAM-AT's pipeline restated (ToTensor, normalise, rescale by the image's min and max, normalise
    again, the model, argmax)."""
    from evaluation.inference import predict
    from util.data.dataset import rescale_normalized

    model = randomised(VainFDeepLab("deeplabv3plus_mobilenet", 5)).float()
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (37, 53, 3)).astype(np.float32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None] / 255 - mean) / std
    x = (x - x.min()) / (x.max() - x.min())
    with torch.no_grad():
        expected = model((x - mean) / std).argmax(1)[0].numpy()
    rescaled = rescale_normalized(image)
    assert rescaled.min() == 0 and abs(rescaled.max() - 255) < 1e-3
    protocol = Protocol(5, 0, 33, 33, eval_crop="whole", flip=False)
    ours = predict(model, rescaled, np.zeros((37, 53), np.uint8), protocol, torch.device("cpu"))
    assert (ours == expected).mean() > 0.999


def test_sam_at_training_attack_can_see_the_unnormalized_image():
    """adv_grad_at_unnormalized restates SAM-AT's slip: the gradient is taken at model(x + delta), x in [0, 1]."""
    from defense import TrainingAttack

    model = randomised(VainFDeepLab("deeplabv3_mobilenet", 3))
    torch.manual_seed(0)
    x01 = torch.rand(2, 3, 17, 17, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 17, 17))
    attack = TrainingAttack(0.03, 1, 0.03, False, "linf", unnormalized=True).build(model, 255)
    adv = attack.to_pixels(attack(attack.normalize(x01), target))
    z = x01.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(z), target), z)
    assert torch.allclose(adv, (x01 + 0.03 * grad.sign()).clamp(0, 1), atol=1e-9)


@pytest.mark.parametrize("layout", ["robustness", "robustbench", "torchvision"])
def test_robust_imagenet_releases_initialise_the_resnet50_backbone(tmp_path, caplog, layout):
    """PIR-AT's robust initialisation: the robustness library's checkpoint ({'model': module.model.*, with
    module.attacker.model.* and module.normalizer.*}), RobustBench's (model.* beside normalize.*) and torchvision's
    plain file all load strictly into the ResNet-50 backbone, saying which release they are."""
    import logging

    net = VainFDeepLab("deeplabv3plus_resnet50", 3)
    torch.manual_seed(0)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.backbone.state_dict().items()}
    weights.update({"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)})
    norm = {"new_mean": torch.rand(3, 1, 1), "new_std": torch.rand(3, 1, 1)}
    if layout == "robustness":
        state = {
            **{f"module.model.{k}": v for k, v in weights.items()},
            **{f"module.attacker.model.{k}": v + 1 for k, v in weights.items() if v.is_floating_point()},
            **{f"module.normalizer.{k}": v for k, v in norm.items()},
        }
        torch.save({"model": state, "epoch": 90, "schedule": None}, tmp_path / "init.pt")
    elif layout == "robustbench":
        torch.save(
            {
                **{f"model.{k}": v for k, v in weights.items()},
                "normalize.mean": norm["new_mean"],
                "normalize.std": norm["new_std"],
            },
            tmp_path / "init.pt",
        )
    else:
        torch.save(weights, tmp_path / "init.pt")
    with caplog.at_level(logging.INFO):
        load_vainf_init(net, str(tmp_path / "init.pt"))
    assert torch.equal(net.backbone.layer3[5].conv2.weight, weights["layer3.5.conv2.weight"])
    if layout != "torchvision":
        assert f"a {'robustness library' if layout == 'robustness' else 'RobustBench'} release" in caplog.text
