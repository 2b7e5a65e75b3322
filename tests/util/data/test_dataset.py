"""Reading lists, images and labels; every bad input is a one-line UserError naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from util.data import transform
from util.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SemData,
    colorize,
    load_names_colors,
    make_dataset,
    mean_std_255,
    read_image,
    read_label,
)
from util.errors import UserError

REPO = ROOT


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard VOC colour map (index bits spread over r, g, b from the high bit down)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def label_map(h: int = 6, w: int = 8) -> np.ndarray:
    """A small index map with VOC classes and the 255 border value."""
    label = np.zeros((h, w), dtype=np.uint8)
    label[1:3, 1:4] = 15  # person
    label[3:, 4:] = 7  # car
    label[:, -1] = 255
    return label


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    """Save indices as a 'P' PNG with the VOC palette, like VOC SegmentationClass files."""
    img = Image.fromarray(indices)
    img.putpalette(voc_palette().ravel().tolist())
    assert img.mode == "P"
    img.save(path)


def write_rgb(path: Path, h: int = 6, w: int = 8) -> np.ndarray:
    """Save a random RGB image and return its pixels."""
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """data_root with two image/label pairs and train/test lists."""
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    for name in ("a", "b"):
        write_rgb(tmp_path / "JPEGImages" / f"{name}.png")
        write_palette_png(tmp_path / "SegmentationClass" / f"{name}.png", label_map())
    (tmp_path / "train.txt").write_text(
        "JPEGImages/a.png SegmentationClass/a.png\n\nJPEGImages/b.png SegmentationClass/b.png\n"
    )
    (tmp_path / "test.txt").write_text("JPEGImages/a.png\nJPEGImages/b.png SegmentationClass/b.png\n")
    return tmp_path


def test_mean_std_255():
    mean, std = mean_std_255()
    np.testing.assert_allclose(mean, [0.485 * 255, 0.456 * 255, 0.406 * 255])
    np.testing.assert_allclose(std, np.array(IMAGENET_STD) * 255)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert mean_std_255((0, 0.5, 1), (1, 1, 2)) == ([0, 127.5, 255], [255, 255, 510])  # PIR-AT's: (0, 0, 0), 1s


def test_palette_png_loads_indices_not_luminance(tmp_path):
    path = tmp_path / "label.png"
    indices = label_map()
    write_palette_png(path, indices)
    np.testing.assert_array_equal(read_label(str(path)), indices)
    assert read_label(str(path)).dtype == np.uint8
    # The reason labels are read with PIL: cv2 converts palette colours to luminance.
    cv2_gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert not np.array_equal(cv2_gray, indices)
    assert cv2_gray[1, 1] != 15


def test_grayscale_and_16bit_and_equal_rgb_labels(tmp_path):
    indices = label_map()
    Image.fromarray(indices).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "gray.png")), indices)

    Image.fromarray(indices.astype(np.uint16)).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "wide.png")), indices)

    Image.fromarray(np.stack([indices] * 3, axis=-1)).save(tmp_path / "rgb_gray.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "rgb_gray.png")), indices)


def test_label_errors(tmp_path):
    with pytest.raises(UserError, match="missing.png' not found"):
        read_label(str(tmp_path / "missing.png"))

    write_rgb(tmp_path / "color.png")
    with pytest.raises(UserError, match=r"color.png' is a color \(RGB\) image.*class-index map"):
        read_label(str(tmp_path / "color.png"))

    big = label_map().astype(np.uint16)
    big[0, 0] = 1000
    Image.fromarray(big).save(tmp_path / "big.png")
    with pytest.raises(UserError, match="big.png' holds values 0..1000"):
        read_label(str(tmp_path / "big.png"))

    (tmp_path / "garbage.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(UserError, match="garbage.png' cannot be decoded"):
        read_label(str(tmp_path / "garbage.png"))


def test_read_image_rgb_float(tmp_path):
    rgb = write_rgb(tmp_path / "img.png")
    image = read_image(str(tmp_path / "img.png"))
    assert image.dtype == np.float32 and image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image, rgb.astype(np.float32))


def test_read_image_errors(tmp_path):
    with pytest.raises(UserError, match="nothere.png' not found"):
        read_image(str(tmp_path / "nothere.png"))
    (tmp_path / "garbage.png").write_bytes(b"\x00\x01garbage bytes" * 20)
    with pytest.raises(UserError, match="garbage.png' cannot be decoded"):
        read_image(str(tmp_path / "garbage.png"))


def test_make_dataset_train_and_test(voc_root):
    items = make_dataset("train", str(voc_root), str(voc_root / "train.txt"))
    assert items == [
        (str(voc_root / "JPEGImages/a.png"), str(voc_root / "SegmentationClass/a.png")),
        (str(voc_root / "JPEGImages/b.png"), str(voc_root / "SegmentationClass/b.png")),
    ]
    test_items = make_dataset("test", str(voc_root), str(voc_root / "test.txt"))
    assert test_items == [
        (str(voc_root / "JPEGImages/a.png"), None),
        (str(voc_root / "JPEGImages/b.png"), str(voc_root / "SegmentationClass/b.png")),
    ]


def test_make_dataset_errors(voc_root):
    root = str(voc_root)
    with pytest.raises(UserError, match="list file '.*nolist.txt' not found; check train_list"):
        make_dataset("train", root, str(voc_root / "nolist.txt"))

    with pytest.raises(UserError, match="data_root '.*nowhere' not found"):
        make_dataset("train", str(voc_root / "nowhere"), str(voc_root / "train.txt"))

    bad = voc_root / "bad.txt"
    bad.write_text("JPEGImages/a.png SegmentationClass/a.png\n\nJPEGImages/b.png\n")
    with pytest.raises(UserError, match=r"bad.txt' line 3: expected 'image_path label_path'"):
        make_dataset("train", root, str(bad))
    bad.write_text("JPEGImages/a.png SegmentationClass/a.png extra\n")
    with pytest.raises(UserError, match=r"bad.txt' line 1: .*got 3 field"):
        make_dataset("test", root, str(bad))

    bad.write_text("JPEGImages/a.png SegmentationClass/a.png\nJPEGImages/c.png SegmentationClass/a.png\n")
    with pytest.raises(UserError, match=r"bad.txt' line 2: image '.*JPEGImages/c.png' not found"):
        make_dataset("train", root, str(bad))
    bad.write_text("JPEGImages/a.png SegmentationClass/c.png\n")
    with pytest.raises(UserError, match=r"bad.txt' line 1: label '.*SegmentationClass/c.png' not found"):
        make_dataset("val", root, str(bad))

    bad.write_text("\n\n")
    with pytest.raises(UserError, match="bad.txt' has no entries"):
        make_dataset("train", root, str(bad))


def test_semdata_loads_and_transforms(voc_root):
    data = SemData("train", str(voc_root), str(voc_root / "train.txt"), classes=21)
    assert len(data) == 2
    image, label = data[0]
    assert image.shape == (6, 8, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(label, label_map())

    mean, std = mean_std_255()
    pipeline = transform.Compose([transform.ToTensor(), transform.Normalize(mean, std)])
    data = SemData("val", str(voc_root), str(voc_root / "train.txt"), transform=pipeline, classes=21)
    image_t, label_t = data[1]
    assert tuple(image_t.shape) == (3, 6, 8) and tuple(label_t.shape) == (6, 8)


def test_semdata_test_item_without_label_is_all_ignore(voc_root):
    data = SemData("test", str(voc_root), str(voc_root / "test.txt"), ignore_label=255)
    image, label = data[0]
    assert label.shape == image.shape[:2] and label.dtype == np.uint8
    assert (label == 255).all()
    np.testing.assert_array_equal(data[1][1], label_map())


def test_semdata_size_mismatch(voc_root):
    Image.fromarray(label_map(5, 8)).save(voc_root / "SegmentationClass" / "b.png")
    data = SemData("train", str(voc_root), str(voc_root / "train.txt"))
    with pytest.raises(UserError, match=r"image '.*b.png' is 6x8 but label '.*b.png' is 5x8"):
        data[1]


def test_semdata_label_out_of_range(voc_root):
    label = label_map()
    label[0, 0] = 30
    label[0, 1] = 21
    Image.fromarray(label).save(voc_root / "SegmentationClass" / "a.png")
    data = SemData("train", str(voc_root), str(voc_root / "train.txt"), classes=21)
    with pytest.raises(
        UserError,
        match=r"a.png' has values 21, 30 outside 0..20 \(classes=21\) "
        r"and not ignore_label=255",
    ):
        data[0]
    data[1]  # the untouched label is fine: 255 is the ignore label
    # Without classes nothing is checked.
    SemData("train", str(voc_root), str(voc_root / "train.txt"))[0]


def test_semdata_corrupt_image(voc_root):
    (voc_root / "JPEGImages" / "a.png").write_bytes(b"not an image at all" * 5)
    data = SemData("train", str(voc_root), str(voc_root / "train.txt"))
    with pytest.raises(UserError, match=r"image '.*JPEGImages/a.png' cannot be decoded"):
        data[0]


def test_colorize_uses_palette():
    palette = voc_palette(21)
    image = colorize(label_map(), palette)
    assert image.mode == "P"
    np.testing.assert_array_equal(np.array(image), label_map())
    rgb = np.array(image.convert("RGB"))
    np.testing.assert_array_equal(rgb[1, 1], palette[15])
    np.testing.assert_array_equal(rgb[0, -1], [0, 0, 0])  # 255 is beyond the palette


@pytest.mark.parametrize("name, classes", [("voc2012", 21), ("cityscapes", 19)])
def test_repo_names_and_colors_files(name, classes):
    names, colors = load_names_colors(
        str(REPO / "dataset" / name / f"{name}_names.txt"), str(REPO / "dataset" / name / f"{name}_colors.txt"), classes
    )
    assert len(names) == classes and colors.shape == (classes, 3) and colors.dtype == np.uint8
    if name == "voc2012":
        assert names[0] == "background" and names[-1] == "tvmonitor"
        np.testing.assert_array_equal(colors, voc_palette(21))
    else:
        assert names[6] == "traffic light" and names[-1] == "bicycle"


def test_names_colors_errors(tmp_path):
    names = tmp_path / "names.txt"
    colors = tmp_path / "colors.txt"
    names.write_text("a\nb\nc\n")
    colors.write_text("0 0 0\n1 1 1\n2 2 2\n")
    assert load_names_colors(str(names), str(colors), 3)[0] == ["a", "b", "c"]

    with pytest.raises(UserError, match=r"names file '.*names.txt' has 3 names but classes is 4"):
        load_names_colors(str(names), str(colors), 4)
    names.write_text("a\nb\nc\nd\n")
    with pytest.raises(UserError, match=r"colors file '.*colors.txt' has 3 colors but classes is 4"):
        load_names_colors(str(names), str(colors), 4)
    colors.write_text("0 0 0\n1 1\n2 2 2\n3 3 3\n")
    with pytest.raises(UserError, match=r"colors.txt' line 2: expected 'r g b'"):
        load_names_colors(str(names), str(colors), 4)
    with pytest.raises(UserError, match=r"names file '.*nope.txt' not found"):
        load_names_colors(str(tmp_path / "nope.txt"), str(colors), 4)
    with pytest.raises(UserError, match=r"colors file '.*nope.txt' not found"):
        load_names_colors(str(names), str(tmp_path / "nope.txt"), 4)


def test_lists_with_a_bom_crlf_blanks_and_spaces_in_paths(tmp_path):
    """Lists researchers really write: a UTF-8 byte-order mark, Windows line ends, trailing blanks, and folder
    names with spaces (the one split where both files exist)."""
    from util.data.dataset import make_dataset

    (tmp_path / "my images").mkdir()
    for name in ("my images/a 1.png", "my images/a 1 label.png", "b.png", "b_label.png"):
        (tmp_path / name).write_bytes(b"")
    text = "\ufeffmy images/a 1.png  my images/a 1 label.png \r\nb.png b_label.png\t\r\n\r\n"
    (tmp_path / "list.txt").write_bytes(text.encode("utf-8"))
    items = make_dataset("train", str(tmp_path), str(tmp_path / "list.txt"))
    assert items == [
        (str(tmp_path / "my images/a 1.png"), str(tmp_path / "my images/a 1 label.png")),
        (str(tmp_path / "b.png"), str(tmp_path / "b_label.png")),
    ]
    (tmp_path / "list.txt").write_text("b.png b_label.png extra\n")
    with pytest.raises(UserError, match="line 1: expected 'image_path label_path' separated by a space, got 3"):
        make_dataset("train", str(tmp_path), str(tmp_path / "list.txt"))


def test_class_pixel_counts_pools_every_label_without_the_ignored(voc_root):
    """The pixels per class of all the list's labels (the dataset table of a balanced loss); ignore_label is not
    a class, and a value out of range is the same one-line error as when a sample is loaded."""
    label = label_map()
    label[0, :3] = 255
    Image.fromarray(label).save(voc_root / "SegmentationClass" / "a.png")
    data = SemData("train", str(voc_root), str(voc_root / "train.txt"), classes=21)
    expected = np.zeros(21, dtype=np.int64)
    for pixels in (label, label_map()):
        for value in pixels.ravel():
            if value != 255:
                expected[value] += 1
    np.testing.assert_array_equal(data.class_pixel_counts(), expected)
    label[1, 1] = 40
    Image.fromarray(label).save(voc_root / "SegmentationClass" / "a.png")
    with pytest.raises(UserError, match=r"a.png' has values 40 outside 0..20"):
        data.class_pixel_counts()
