"""tool_data.voc: list files from a VOCdevkit laid out as VainF's / SAM-AT's code reads it, on a small devkit
made here (palette PNG masks, train_aug.txt in the root as SAM-AT places it)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tool_data.voc import write_lists
from util.data.dataset import SemData
from util.errors import UserError


def _devkit(root, ids=("2007_000032", "2007_000039", "2008_000001"), aug=True):
    voc = root / "VOCdevkit/VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "SegmentationClassAug"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        mask = Image.fromarray(rng.integers(0, 21, (12, 16), dtype=np.uint8), mode="P")
        mask.putpalette([c for k in range(256) for c in (k, 255 - k, (7 * k) % 256)])
        mask.save(voc / "SegmentationClass" / f"{i}.png")
        mask.save(voc / "SegmentationClassAug" / f"{i}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text(f"{ids[0]}\n{ids[1]}\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text(f"\ufeff{ids[2]}\r\n")
    if aug:
        (root / "train_aug.txt").write_text("\n".join(ids) + "\n")
    return voc


def test_lists_pair_each_image_with_its_mask_and_load(tmp_path):
    voc = _devkit(tmp_path)
    out = write_lists(tmp_path)
    assert sorted(out) == ["train", "train_aug", "val"]
    assert (tmp_path / "list/val.txt").read_text() == (
        "VOCdevkit/VOC2012/JPEGImages/2008_000001.jpg VOCdevkit/VOC2012/SegmentationClass/2008_000001.png\n"
    )
    assert (tmp_path / "list/train_aug.txt").read_text().count("SegmentationClassAug") == 3
    data = SemData("train", str(tmp_path), str(tmp_path / "list/train_aug.txt"), None, 21)
    image, label = data[2]
    expected = np.array(Image.open(voc / "SegmentationClassAug/2008_000001.png"))  # the palette indices
    assert image.shape == (12, 16, 3) and np.array_equal(label, expected) and label.max() > 2
    assert write_lists(tmp_path) == out  # unchanged lists are rewritten identically


def test_missing_pieces_are_named_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError, match="VOCdevkit/VOC2012' not found; pass --root the folder that holds"):
        write_lists(tmp_path)
    voc = _devkit(tmp_path)
    (voc / "JPEGImages/2007_000039.jpg").unlink()
    with pytest.raises(UserError, match="1 file.s. listed by .*train.txt are missing .*2007_000039.jpg"):
        write_lists(tmp_path)
    assert not (tmp_path / "list").exists()
    _devkit(tmp_path)
    for mask in (voc / "SegmentationClassAug").iterdir():
        mask.unlink()
    (voc / "SegmentationClassAug").rmdir()
    with pytest.raises(UserError, match="SegmentationClassAug' not found, needed by .*train_aug.txt"):
        write_lists(tmp_path)
    (tmp_path / "train_aug.txt").unlink()
    assert sorted(write_lists(tmp_path)) == ["train", "val"]  # no augmented set: the devkit's lists only


def test_a_changed_list_needs_overwrite_and_the_command_exits_2(tmp_path):
    _devkit(tmp_path)
    write_lists(tmp_path)
    (tmp_path / "list/val.txt").write_text("mine\n")
    command = [sys.executable, "-m", "tool_data.voc", "--root", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pass --overwrite" in proc.stderr
    assert (tmp_path / "list/val.txt").read_text() == "mine\n"
    proc = subprocess.run([*command, "--overwrite"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and (tmp_path / "list/val.txt").read_text().startswith("VOCdevkit/")
