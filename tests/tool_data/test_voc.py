"""tool_data.voc: list files from a VOCdevkit laid out as VainF's / SAM-AT's code reads it, on a small devkit
made here (palette PNG masks, train_aug.txt in the root as SAM-AT places it), and SBD's class maps and list as
PIR-AT trains on them (.mat files written here with the release's GTcls struct)."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from tests.conftest import ROOT
from tool_data.voc import main, write_lists
from util.data.dataset import SemData
from util.errors import UserError, run_main


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


# SBD (VOCaug/dataset, as PIR-AT reads it): 5 trainval ids, 2 of them in the devkit's val.txt.
SBD_TRAIN, SBD_VAL = ("2008_000001", "2007_000039", "2008_000002"), ("2008_000008", "2008_000003")


def _sbd(root, size=(12, 16)):
    """A devkit whose val.txt holds 2008_000001 and 2008_000008, and an SBD layout with .mat class maps."""
    voc = _devkit(root, ids=("2007_000032", "2007_000039", "2008_000001", "2008_000008"))
    (voc / "ImageSets/Segmentation/val.txt").write_text("\ufeff2008_000001\r\n2008_000008\r\n")
    base = root / "VOCaug/dataset"
    for folder in ("img", "cls"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for k, i in enumerate(SBD_TRAIN + SBD_VAL):
        h, w = size[0] + k, size[1] - k  # every image its own size, so a transposed map would be caught
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(base / "img" / f"{i}.jpg")
        seg = rng.integers(0, 21, (h, w), dtype=np.uint8)
        seg[0, :3] = 255  # SBD has no ignore band, but 255 is a valid value
        _savemat(base / "cls" / f"{i}.mat", seg)
    (base / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (base / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    (base / "trainval.txt").write_text("\n".join(SBD_TRAIN + SBD_VAL) + "\n")
    return base


def _savemat(path, seg, fields=("Segmentation", "Boundaries", "CategoriesPresent")):
    """An SBD cls/ file: the struct GTcls (Segmentation, a cell of 20 sparse Boundaries, CategoriesPresent)."""
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix((seg == k + 1).astype(np.uint8))
    gt = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": np.unique(seg[(seg > 0) & (seg < 21)])}
    scipy.io.savemat(path, {"GTcls": {k: gt[k] for k in fields}}, do_compression=True)


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_sbd_pngs_equal_the_mat_maps_and_the_voc_val_images_are_left_out(tmp_path, caplog):
    base = _sbd(tmp_path)
    with caplog.at_level(logging.INFO, logger="tool_data.voc"):
        out = write_lists(tmp_path)
    assert sorted(out) == ["sbd_trainval", "train", "train_aug", "val"]
    assert "removed 2 of 5 SBD trainval images that are in VOC 2012 val" in caplog.text
    for i in SBD_TRAIN + SBD_VAL:
        png = Image.open(base / "cls_png" / f"{i}.png")
        expected = scipy.io.loadmat(base / "cls" / f"{i}.mat", struct_as_record=False, squeeze_me=True)
        assert png.mode == "L" and np.array_equal(np.array(png), expected["GTcls"].Segmentation)
    kept = ("2007_000039", "2008_000002", "2008_000003")  # trainval order, 2008_000001 and 2008_000008 removed
    assert (tmp_path / "list/sbd_trainval.txt").read_text() == "".join(
        f"VOCaug/dataset/img/{i}.jpg VOCaug/dataset/cls_png/{i}.png\n" for i in kept
    )
    data = SemData("train", str(tmp_path), str(tmp_path / "list/sbd_trainval.txt"), None, 21)
    image, label = data[2]
    assert image.shape[:2] == label.shape == (16, 12) and label.max() == 255
    before = _listing(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tool_data.voc"):
        assert write_lists(tmp_path) == out
    assert "wrote 0 class maps to VOCaug/dataset/cls_png, kept 5 existing" in caplog.text
    assert [row[:2] for row in _listing(tmp_path)] == [row[:2] for row in before]


def test_keep_val_overlap_lists_all_of_trainval_and_warns(tmp_path, caplog):
    _sbd(tmp_path)
    with caplog.at_level(logging.INFO, logger="tool_data.voc"):
        main(["--root", str(tmp_path), "--keep-val-overlap"])
    assert "list/sbd_trainval.txt holds 2 of the 2 VOC 2012 val images (--keep-val-overlap" in caplog.text
    lines = (tmp_path / "list/sbd_trainval.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"VOCaug/dataset/img/{i}.jpg" for i in SBD_TRAIN + SBD_VAL]
    with pytest.raises(UserError, match="sbd_trainval.txt' exists with other content; pass --overwrite"):
        write_lists(tmp_path)  # the default list differs from the kept one
    assert len(write_lists(tmp_path, overwrite=True)) == 4


def test_sbd_without_the_devkit_needs_keep_val_overlap(tmp_path, caplog):
    _sbd(tmp_path)
    shutil.rmtree(tmp_path / "VOCdevkit")
    (tmp_path / "train_aug.txt").unlink()
    before = _listing(tmp_path)
    with pytest.raises(
        UserError, match="val.txt' not found, so SBD's trainval cannot be checked .* --keep-val-overlap"
    ):
        write_lists(tmp_path)
    assert _listing(tmp_path) == before
    with caplog.at_level(logging.INFO, logger="tool_data.voc"):
        assert sorted(write_lists(tmp_path, keep_val_overlap=True)) == ["sbd_trainval"]
    assert "not checked for VOC 2012 val images" in caplog.text
    assert (tmp_path / "list/sbd_trainval.txt").read_text().count("\n") == 5


def _no_folder(base, name):
    shutil.rmtree(base / name)


def _write(path, content):
    path.write_bytes(content)


BROKEN = {
    "no img/": (lambda b: _no_folder(b, "img"), "dataset/img' not found; unpack SBD's benchmark.tgz"),
    "no cls/": (lambda b: _no_folder(b, "cls"), "dataset/cls' not found; unpack SBD's benchmark.tgz"),
    "no trainval.txt": (
        lambda b: (b / "trainval.txt").unlink(),
        "trainval.txt' not found; SBD ships train.txt and val.txt",
    ),
    "a .jpg missing": (
        lambda b: (b / "img/2008_000003.jpg").unlink(),
        "1 file.s. listed by .*trainval.txt are missing, e.g. '.*img/2008_000003.jpg'",
    ),
    "a .mat missing": (lambda b: (b / "cls/2007_000039.mat").unlink(), "1 file.s. listed .* e.g. '.*2007_000039.mat'"),
    "not a .mat": (lambda b: _write(b / "cls/2008_000002.mat", b"<html>404</html>" * 10), "cannot be read as a MATLAB"),
    "no GTcls.Segmentation": (
        lambda b: _savemat(
            b / "cls/2008_000002.mat", np.zeros((14, 14), np.uint8), ("Boundaries", "CategoriesPresent")
        ),
        "2008_000002.mat' holds no GTcls.Segmentation",
    ),
    "a value of 21": (
        lambda b: _savemat(b / "cls/2008_000003.mat", np.full((16, 12), 21, np.uint8)),
        "2008_000003.mat' GTcls.Segmentation holds value 21; SBD class maps hold 0..20",
    ),
    "a transposed map": (
        lambda b: _savemat(b / "cls/2008_000003.mat", np.zeros((12, 16), np.uint8)),
        "2008_000003.mat' GTcls.Segmentation is 12x16 but image .*2008_000003.jpg' is 16x12 .HxW.",
    ),
    "cls_png/ a file": (lambda b: _write(b / "cls_png", b"x"), "cls_png' is a file, not a folder; move it"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_sbd_input_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, case):
    base = _sbd(tmp_path)
    breaks, message = BROKEN[case]
    breaks(base)
    before = _listing(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(["--root", str(tmp_path)]))
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert re.search(message, stderr), stderr
    assert _listing(tmp_path) == before


def test_the_command_prints_only_the_error_when_a_class_map_is_bad(tmp_path):
    base = _sbd(tmp_path)
    _savemat(base / "cls/2008_000002.mat", np.full((14, 14), 40, np.uint8))
    command = [sys.executable, "-m", "tool_data.voc", "--root", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "holds value 40" in proc.stderr, proc.stderr
    assert not (tmp_path / "list").exists() and not (base / "cls_png").exists()
    proc = subprocess.run([*command, "--keep-val-overlap"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1  # the overlap warning waits for the checks
