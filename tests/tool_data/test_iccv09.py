"""Stanford Background (iccv09Data): regions.txt -> label PNGs (-1 -> 255) and list files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tool_data import iccv09
from util.data.dataset import SemData, load_names_colors
from util.errors import UserError

REPO = ROOT
H, W = 16, 24
IDS = ["0000047", "0000051", "0000059", "0000062", "0000099"]


def fake_regions(index: int) -> np.ndarray:
    """A distinct HxW matrix per image holding every class and some unknown (-1) pixels."""
    regions = (np.arange(H * W).reshape(H, W) // 7 + index) % 8
    regions[index, :] = -1
    regions[:, -1 - index] = -1
    return regions


def write_regions(path: Path, regions: np.ndarray) -> None:
    path.write_text("".join(" ".join(str(v) for v in row) + "\n" for row in regions))


@pytest.fixture
def root(tmp_path) -> Path:
    """A tiny iccv09Data tree with the original layout (5 images of 24x16)."""
    root = tmp_path / "iccv09Data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for index, id_ in enumerate(IDS):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{id_}.jpg")
        write_regions(root / "labels" / f"{id_}.regions.txt", fake_regions(index))
        (root / "labels" / f"{id_}.surfaces.txt").write_text("not read\n")
    (root / "horizons.txt").write_text("not read\n")
    return root


def read_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_convert_writes_labels_and_lists(root):
    result = iccv09.convert(str(root), val_fraction=0.2, seed=0)
    assert len(result.train) == 4 and len(result.val) == 1 and result.written == 5
    assert sorted(result.train + result.val) == IDS

    for index, id_ in enumerate(IDS):
        with Image.open(root / "label" / f"{id_}.png") as img:
            assert img.mode == "L"
            label = np.array(img)
        regions = fake_regions(index)
        np.testing.assert_array_equal(label, np.where(regions == -1, 255, regions))
        assert set(np.unique(label)) == set(range(8)) | {255}

    train = read_list(root / "list" / "train.txt")
    val = read_list(root / "list" / "val.txt")
    assert train == [f"images/{i}.jpg label/{i}.png" for i in result.train]
    assert val == [f"images/{i}.jpg label/{i}.png" for i in result.val]


def test_split_is_deterministic_and_follows_the_80_20_protocol(root, tmp_path):
    ids = [f"{i:07d}" for i in range(715)]
    train, val = iccv09.split_ids(ids, 0.2, seed=0)
    assert (len(train), len(val)) == (572, 143)
    assert sorted(train + val) == ids and train == sorted(train)
    assert iccv09.split_ids(ids, 0.2, seed=0) == (train, val)
    assert iccv09.split_ids(ids, 0.2, seed=1)[1] != val

    first = iccv09.convert(str(root), seed=5)
    again = iccv09.convert(str(root), seed=5)
    assert (again.train, again.val) == (first.train, first.val)
    assert again.written == 0 and again.unchanged == 5

    with pytest.raises(UserError, match="--val-fraction must be between 0 and 1"):
        iccv09.split_ids(ids, 1.0)
    with pytest.raises(UserError, match="leaves an empty val split"):
        iccv09.split_ids(ids[:3], 0.1)


def test_semdata_loads_the_result(root):
    iccv09.convert(str(root))
    for split in ("train", "val"):
        data = SemData(split, str(root), str(root / "list" / f"{split}.txt"), classes=8)
        for index in range(len(data)):
            image, label = data[index]
            assert image.shape == (H, W, 3) and label.shape == (H, W) and label.dtype == np.uint8
            assert set(np.unique(label)) <= set(range(8)) | {255}


def test_repo_names_colors_and_config():
    names, colors = load_names_colors(
        str(REPO / "dataset/stanford/stanford_names.txt"), str(REPO / "dataset/stanford/stanford_colors.txt"), 8
    )
    assert names == list(iccv09.CLASS_NAMES) and colors.shape == (8, 3)

    from util.config import load_config

    cfg = load_config(str(REPO / "config/stanford/stanford_aspp.yaml"))
    assert cfg.arch == "aspp" and cfg.classes == 8
    assert cfg.data_root == "dataset/stanford/iccv09Data"
    assert (cfg.train_h - 1) % 8 == 0 and (cfg.train_w - 1) % 8 == 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[:2] + ["1.5" + rows[2][2:]] + rows[3:], r"line 3: '1.5' is not an integer"),
        (lambda rows: rows[:3] + [rows[3] + " 0"] + rows[4:], r"line 4: 25 values, expected 24"),
        (lambda rows: rows[:4] + [rows[4].replace("3", "8", 1)] + rows[5:], r"line 5: value 8 .*outside -1..7"),
        (lambda rows: rows[:5] + [rows[5].replace("3", "-2", 1)] + rows[6:], r"line 6: value -2"),
        (lambda rows: rows + [rows[0]], r"is 17x24 \(rows x values per row\) but image .* is 16x24"),
        (lambda rows: [" ".join(row.split()[:-1]) for row in rows], r"is 16x23 .* is 16x24"),
        (lambda rows: rows[:1] + [""] + rows[1:], r"line 2: 0 values"),
    ],
)
def test_malformed_regions_name_the_file_and_line(root, edit, message):
    path = root / "labels" / f"{IDS[2]}.regions.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(UserError, match=rf"'{re.escape(str(path))}'.*{message}"):
        iccv09.convert(str(root))
    assert not (root / "label").exists() and not (root / "list").exists()  # nothing written


def test_missing_inputs(root, tmp_path):
    (root / "labels" / f"{IDS[1]}.regions.txt").unlink()
    with pytest.raises(UserError, match=rf"1 image\(s\) .* no regions file, e.g. .*{IDS[1]}"):
        iccv09.convert(str(root))
    with pytest.raises(UserError, match="iccv09Data root '.*nowhere' not found"):
        iccv09.convert(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="images' not found; pass the unpacked iccv09Data"):
        iccv09.convert(str(tmp_path))
    (root / "images" / f"{IDS[0]}.jpg").write_bytes(b"not a jpeg")
    (root / "labels" / f"{IDS[1]}.regions.txt").write_text("0\n")
    with pytest.raises(UserError, match=rf"image '.*{IDS[0]}.jpg' cannot be decoded"):
        iccv09.convert(str(root))


def test_keeps_different_outputs_unless_overwrite(root):
    iccv09.convert(str(root))
    label_path = root / "label" / f"{IDS[0]}.png"
    converted = np.array(Image.open(label_path))
    Image.fromarray(np.zeros_like(converted)).save(label_path)

    with pytest.raises(UserError, match=rf"1 existing file\(s\) differ.*{IDS[0]}.png'; pass --overwrite"):
        iccv09.convert(str(root))
    assert not np.array(Image.open(label_path)).any()
    with pytest.raises(UserError, match=r"e.g. '.*list/(train|val).txt'; pass --overwrite"):
        iccv09.convert(str(root), seed=7)

    result = iccv09.convert(str(root), overwrite=True)
    assert result.written == 1 and result.unchanged == 4
    np.testing.assert_array_equal(np.array(Image.open(label_path)), converted)
    assert not list(root.rglob("*.tmp"))


def test_cli_success_and_one_line_error(run_cli, root, tmp_path):
    code, _, err = run_cli(iccv09, ["--root", str(root), "--seed", "2"])
    assert code == 0 and err == ""
    assert len(read_list(root / "list" / "val.txt")) == 1

    write_regions(root / "labels" / f"{IDS[3]}.regions.txt", fake_regions(3)[:, :20])
    code, _, err = run_cli(iccv09, ["--root", str(root), "--overwrite"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: regions file '")
    assert f"{IDS[3]}.regions.txt" in lines[0] and "Traceback" not in err

    code, _, err = run_cli(iccv09, ["--root", str(tmp_path / "nowhere")])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: iccv09Data root")
