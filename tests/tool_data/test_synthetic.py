"""Tests for the synthetic dataset: determinism, semseg list layout, labels, ignore band, colour-free classes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tool_data.synthetic import (
    CLASS_HUES,
    CLASS_NAMES,
    IGNORE_LABEL,
    Knobs,
    generate,
    main,
    render_sample,
)
from util.errors import EXIT_USER_ERROR, UserError, run_main

REPO = ROOT
NUM_CLASSES = len(CLASS_NAMES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset shared by the read-only tests."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, num_train=120, num_val=12)
    return root


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    lines = (root / "list" / f"{split}.txt").read_text().splitlines()
    return [tuple(root / rel for rel in line.split()) for line in lines]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=3, num_train=6, num_val=3)
    generate(tmp_path / "b", seed=3, num_train=6, num_val=3)
    generate(tmp_path / "c", seed=4, num_train=6, num_val=3)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    images = [k for k in a if k.startswith("image/")]
    assert len(images) == 9
    assert all(a[k] != c[k] for k in images)


def test_val_does_not_depend_on_num_train(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=0, num_train=2, num_val=3)
    generate(tmp_path / "b", seed=0, num_train=7, num_val=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    val = [k for k in a if "/val/" in k or k.endswith("val.txt")]
    assert len(val) == 7
    assert all(a[k] == b[k] for k in val)
    assert a["image/train/00001.png"] == b["image/train/00001.png"]


def test_list_format_and_files(dataset: Path) -> None:
    for split, count in (("train", 120), ("val", 12)):
        lines = (dataset / "list" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == count
        assert lines[0] == f"image/{split}/00000.png label/{split}/00000.png"
        for line in lines:
            fields = line.split(" ")
            assert len(fields) == 2
            assert all((dataset / f).is_file() for f in fields)


def test_files_hold_rgb_images_and_index_labels(dataset: Path) -> None:
    image_path, label_path = _pairs(dataset, "val")[4]
    image, label = Image.open(image_path), Image.open(label_path)
    assert image.mode == "RGB" and label.mode == "L"
    assert image.size == label.size and image.size[1] == 96 and 96 <= image.size[0] <= 120
    want_image, want_label, _ = render_sample(0, "val", 4)
    np.testing.assert_array_equal(np.asarray(image), want_image)  # channel order survived the BGR writer
    np.testing.assert_array_equal(np.asarray(label), want_label)


def test_label_values_and_every_class_present(dataset: Path) -> None:
    seen = set()
    for _, label_path in _pairs(dataset, "train"):
        seen |= set(np.unique(cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)).tolist())
    assert seen == set(range(NUM_CLASSES)) | {IGNORE_LABEL}


def test_ignore_band_is_exactly_the_visible_object_boundaries() -> None:
    kernel = np.ones((3, 3), np.uint8)
    for index in range(20):
        _, label, instance = render_sample(1, "train", index)
        boundary = cv2.dilate(instance, kernel) != cv2.erode(instance, kernel)
        np.testing.assert_array_equal(label == IGNORE_LABEL, boundary)
        assert boundary.any()


def test_ignore_pixels_separate_different_classes(dataset: Path) -> None:
    between, total = 0, 0
    for _, label_path in _pairs(dataset, "train")[:40]:
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        # Which classes occur in the 7x7 window around each pixel (a thin band always has both sides in view).
        present = np.stack(
            [cv2.dilate((label == k).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for k in range(NUM_CLASSES)]
        )
        ignored = label == IGNORE_LABEL
        between += int((present.sum(0)[ignored] >= 2).sum())
        total += int(ignored.sum())
    assert total > 0
    # Only the tips of acute corners and thin occluded slivers see a single class.
    assert between / total > 0.98


def object_colours(colour_hint: float, hue_spread: float = 10.0) -> dict[int, np.ndarray]:
    """Mean RGB of every object's non-ignored pixels over 500 samples, per class, at full contrast."""
    colours: dict[int, list[np.ndarray]] = {k: [] for k in range(1, NUM_CLASSES)}
    for index in range(500):
        knobs = Knobs(colour_hint=colour_hint, hue_spread=hue_spread, contrast=1.0)
        image, label, instance = render_sample(2, "train", index, knobs)
        for obj in range(1, int(instance.max()) + 1):
            pixels = (instance == obj) & (label != IGNORE_LABEL)
            if pixels.any():
                colours[int(label[pixels][0])].append(image[pixels].mean(axis=0))
    return {k: np.stack(c) for k, c in colours.items()}


def test_without_colour_hint_colour_carries_no_class_information() -> None:
    colours = object_colours(0.0)
    every = np.concatenate(list(colours.values()))
    for k, c in colours.items():
        assert len(c) > 200, CLASS_NAMES[k]
        # Per-object colours are ~U(0, 255): std ~74, so the standard error of a class mean is ~5.
        assert np.abs(c.mean(axis=0) - every.mean(axis=0)).max() < 15, CLASS_NAMES[k]
        assert np.abs(c.std(axis=0) - every.std(axis=0)).max() < 10, CLASS_NAMES[k]


@pytest.mark.parametrize("spread", [10.0, 30.0])
def test_colour_hint_gives_each_class_its_hue_family(spread: float) -> None:
    for k, c in object_colours(1.0, spread).items():
        hues = cv2.cvtColor(np.clip(c, 0, 255).astype(np.uint8)[None], cv2.COLOR_RGB2HSV)[0, :, 0] * 2.0
        offset = np.abs((hues - CLASS_HUES[k] + 180) % 360 - 180)
        # Object means carry fill noise, shading and 2-degree HSV steps: allow a few degrees either way.
        assert np.mean(offset <= spread + 6) > 0.95, CLASS_NAMES[k]
        assert np.quantile(offset, 0.9) > 0.6 * spread, CLASS_NAMES[k]


def test_background_chroma_zero_gives_grey_backgrounds() -> None:
    spread = {}
    for chroma in (0.0, 1.0):
        values = []
        for index in range(20):
            image, label, _ = render_sample(0, "train", index, Knobs(background_chroma=chroma, contrast=1.0))
            pixels = image[label == 0].astype(np.int16)
            values.append((pixels.max(axis=1) - pixels.min(axis=1)).mean())
        spread[chroma] = float(np.mean(values))
    # Grey: only the per-channel sensor noise (std 2) separates R, G and B; coloured: tens of levels.
    assert spread[0.0] < 5.0
    assert spread[1.0] > 25.0


def test_contrast_scales_distance_from_grey_and_keeps_labels() -> None:
    for index in range(3):
        full, label_full, _ = render_sample(0, "train", index, Knobs(contrast=1.0))
        low, label_low, _ = render_sample(0, "train", index, Knobs(contrast=0.4))
        np.testing.assert_array_equal(label_low, label_full)
        # Same generator stream, so the two differ only by the scaling (sensor noise std 2 rides on both).
        expected = 127.5 + 0.4 * (full.astype(np.float64) - 127.5)
        assert np.abs(low - expected).mean() < 2.5
        ratio = low.astype(np.float64).std() / full.astype(np.float64).std()
        assert 0.37 < ratio < 0.45
    with pytest.raises(UserError, match="--contrast"):
        generate(Path("unused"), contrast=0.0)


def test_up_to_date_dataset_is_not_rewritten(tmp_path: Path) -> None:
    first = generate(tmp_path, num_train=3, num_val=2)
    image = tmp_path / "image" / "train" / "00000.png"
    stamp = image.stat().st_mtime_ns
    second = generate(tmp_path, num_train=3, num_val=2)
    assert first["generated"] and not second["generated"]
    assert image.stat().st_mtime_ns == stamp
    image.unlink()
    assert generate(tmp_path, num_train=3, num_val=2)["generated"]
    assert image.exists()


def test_other_parameters_need_overwrite(tmp_path: Path) -> None:
    generate(tmp_path, num_train=4, num_val=2)
    unrelated = tmp_path / "image" / "train" / "notes.txt"
    unrelated.write_text("keep me")
    with pytest.raises(UserError, match="--overwrite"):
        generate(tmp_path, num_train=2, num_val=2)
    summary = generate(tmp_path, num_train=2, num_val=2, overwrite=True)
    assert summary["generated"]
    assert len((tmp_path / "list" / "train.txt").read_text().splitlines()) == 2
    assert not (tmp_path / "image" / "train" / "00003.png").exists()  # stale file we wrote ourselves
    assert unrelated.read_text() == "keep me"


def test_foreign_lists_need_overwrite(tmp_path: Path) -> None:
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "train.txt").write_text("a.png b.png\n")
    with pytest.raises(UserError, match="--overwrite"):
        generate(tmp_path, num_train=2, num_val=2)


def test_cli_summary_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--root", str(tmp_path), "--num-train", "2", "--num-val", "1"])
    assert "generated: 2 train + 1 val" in capsys.readouterr().out
    main(["--root", str(tmp_path), "--num-train", "2", "--num-val", "1"])
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(["--root", str(tmp_path), "--num-train", "0"]))
    assert exit_info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("error: --num-train")


def test_names_and_colors_files_match_classes() -> None:
    folder = REPO / "dataset" / "synthetic"
    names = (folder / "synthetic_names.txt").read_text().splitlines()
    lines = (folder / "synthetic_colors.txt").read_text().splitlines()
    colors = [tuple(int(v) for v in line.split()) for line in lines]
    assert names == CLASS_NAMES
    assert len(colors) == len(names)
    assert colors[0] == (0, 0, 0)
    assert len(set(colors)) == len(colors)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)


def test_a_root_below_a_file_is_one_line(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--root '.*file/data' cannot be created: '.*file' is a file"):
        generate(tmp_path / "file" / "data", num_train=1, num_val=1)
    assert (tmp_path / "file").read_text() == "x"


def test_a_fresh_clones_folder_with_only_the_tracked_class_files_is_generated_into(tmp_path) -> None:
    """make demo-strong runs the data tool without --overwrite on a fresh clone's dataset/synthetic."""
    fresh, other = tmp_path / "fresh", tmp_path / "other"
    for folder in (fresh, other):
        folder.mkdir()
        for name in ("synthetic_names.txt", "synthetic_colors.txt"):
            (folder / name).write_bytes((REPO / "dataset" / "synthetic" / name).read_bytes())
    assert generate(fresh, num_train=2, num_val=1)["generated"]
    assert (fresh / "synthetic_names.txt").read_text().splitlines() == CLASS_NAMES
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not empty and holds no synthetic dataset"):
        generate(other, num_train=2, num_val=1)
