"""PIR-AT's evaluation protocol (tool_test/<dataset>/pirat_eval.sh): the images and labels its validation transform
makes, restated here from nmndeep/Robust-Segmentation's ``_val_sync_transform`` with PIL, pixel for pixel; its mIoU
(classes with a non-empty union) restated from its ``eval_performance``; and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.inference import Protocol
from evaluation.predictions import prediction_settings
from evaluation.protocols import load_protocol
from model import build_model
from tests.conftest import ROOT
from tests.entry import test_entry
from util.config import load_config
from util.data.dataset import SemData
from util.errors import UserError

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"
SHAPES = [(37, 50), (50, 37), (41, 41), (30, 61), (45, 26)]  # (h, w): landscape, portrait, square, .5 offsets


def reference_transform(image_path, label_path, crop):
    """The reference's validation pair, as its dataset code writes it: PIL decode, short side to the crop, centre
    crop; VOC's label 255 -> 0."""
    img, mask = Image.open(image_path).convert("RGB"), Image.open(label_path)
    w, h = img.size
    if w > h:
        oh = crop
        ow = int(1.0 * w * oh / h)
    else:
        ow = crop
        oh = int(1.0 * h * ow / w)
    img, mask = img.resize((ow, oh), Image.BILINEAR), mask.resize((ow, oh), Image.NEAREST)
    x1, y1 = int(round((ow - crop) / 2.0)), int(round((oh - crop) / 2.0))  # noqa: RUF046 (as the reference)
    img, mask = img.crop((x1, y1, x1 + crop, y1 + crop)), mask.crop((x1, y1, x1 + crop, y1 + crop))
    target = np.array(mask).astype("int32")
    target[target == 255] = 0
    return np.array(img), target


def reference_miou(predictions, targets, classes):
    """The reference's eval_performance: counts summed over the images, IoU averaged over classes whose union is
    not empty."""
    inter, union = torch.zeros(classes), torch.zeros(classes)
    for pred, target in zip(predictions, targets):
        pred, target = torch.tensor(pred).long(), torch.tensor(target).long()
        hit = pred == target
        for c in range(classes):
            ind = target == c
            inter[c] += hit[ind].float().sum()
            union[c] += ind.float().sum() + (pred == c).float().sum() - hit[ind].float().sum()
    keep = union > 0
    return float((inter[keep] / union[keep]).mean())


@pytest.fixture
def voc_like(tmp_path):
    """JPEG images of several shapes and palette labels with VOC's 255 border, in a list."""
    rng = np.random.default_rng(0)
    palette = [v for i in range(21) for v in (i * 10, 255 - i * 10, i)] + [224, 224, 192] * 235
    lines = []
    for k, (h, w) in enumerate(SHAPES):
        image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / f"{k}.jpg", quality=90)
        label = rng.integers(0, 21, (h, w)).astype(np.uint8)
        label[:2] = 255
        mask = Image.fromarray(label, mode="P")
        mask.putpalette(palette)
        mask.save(tmp_path / f"{k}.png")
        lines.append(f"{k}.jpg {k}.png\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    return tmp_path


def test_the_preset_gives_the_reference_pixels(voc_like):
    data = SemData("val", str(voc_like), str(voc_like / "list.txt"), classes=21, preprocess="pirat", crop=(24, 24))
    protocol = Protocol(21, 0, 24, 24, ignore_as_background=True, eval_crop="whole")
    data.check_samples()
    for k in range(len(SHAPES)):
        image, label = data.sample(k)
        ref_image, ref_label = reference_transform(voc_like / f"{k}.jpg", voc_like / f"{k}.png", 24)
        assert image.dtype == np.float32 and np.array_equal(image, ref_image.astype(np.float32)), k
        assert np.array_equal(protocol.scored_label(label), ref_label), k
        assert np.array_equal(data.read_label(str(voc_like / f"{k}.png")), label)


def test_a_resized_image_smaller_than_the_crop_is_one_line_before_anything_runs(voc_like):
    """Only a non-square crop can be larger than an image with its short side resized: a portrait 50x37 image
    becomes 32x24 for a 24x32 crop."""
    data = SemData("val", str(voc_like), str(voc_like / "list.txt"), classes=21, preprocess="pirat", crop=(24, 32))
    with pytest.raises(UserError) as err:
        data.check_samples()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"image '{voc_like / '1.jpg'}' is 50x37, 32x24 with its short")
    assert message.endswith(
        "smaller than the crop 24x32 (HxW); use a square crop (test_h = test_w) or leave the image out"
    )


def test_test_py_scores_the_crops_with_pir_at_s_miou(tiny_data, tmp_path, run_cli):
    """test.py with the protocol pirat_eval.sh names (config/protocols/pirat.yaml) on the synthetic set, its attacks
    left out: predictions of crop size, and results.json's present_mIoU equal to the reference's mIoU of those."""
    torch.manual_seed(0)
    model = build_model("psp", 18, 5)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pth")
    assert "PROTOCOL=pirat " in (ROOT / "tool_test/voc2012/pirat_eval.sh").read_text()
    assert load_protocol("pirat").overrides["ignore_as_background"] is True
    opts = ["data_root", str(tiny_data), "test_list", str(tiny_data / "list/val.txt"), "pretrained", "False"]
    opts += ["attacks", "[]", "test_h", "40", "test_w", "40", "save_folder", str(tmp_path / "r"), "model_path"]
    opts = ["--protocol", "pirat", *opts]
    code, _, err = run_cli(test_entry, ["--config", CONFIG, *opts, str(tmp_path / "m.pth")])
    assert code == 0, err
    data = SemData("val", str(tiny_data), str(tiny_data / "list/val.txt"), classes=5, preprocess="pirat", crop=40)
    names = [p.split("/")[-1].rsplit(".", 1)[0] for p, _ in data.data_list]
    predictions = [np.array(Image.open(tmp_path / f"r/gray/{n}.png")) for n in names]
    labels = [np.where(data.sample(i)[1] == 255, 0, data.sample(i)[1]) for i in range(len(data))]  # VOC's rule
    assert all(p.shape == (40, 40) for p in predictions)
    result = json.loads((tmp_path / "r/results.json").read_text())
    assert result["present_mIoU"] == pytest.approx(reference_miou(predictions, labels, 5), abs=1e-6)


def test_the_preset_enters_the_fingerprint_only_when_set():
    """Predictions stored before the key existed stay valid; the preset's are told apart."""
    assert "test_preprocess" not in prediction_settings(load_config(CONFIG))
    assert prediction_settings(load_config(CONFIG, ["test_preprocess", "pirat"]))["test_preprocess"] == "pirat"


def test_an_unknown_preprocess_is_one_line():
    with pytest.raises(UserError, match="test_preprocess"):
        load_config(CONFIG, ["test_preprocess", "pil"])
