"""tool_data.ade20k: both label conventions on a small ADEChallengeData2016 made here, and every missing piece
ending in one line with nothing written."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tool_data.ade20k import main, name_mismatches, reduce_zero_label
from util.data.dataset import load_names_colors, make_dataset
from util.errors import UserError

ADE = "ADEChallengeData2016"
STEMS = {
    "training": ["ADE_train_00000002", "ADE_train_00000001", "ADE_train_00000003"],
    "validation": ["ADE_val_00000001"],
}


def make_ade(root: Path) -> Path:
    """A tiny ADEChallengeData2016 under root: RGB JPEGs and single-channel annotations holding 0, 1 and 150."""
    rng = np.random.default_rng(0)
    base = root / ADE
    for split, stems in STEMS.items():
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for k, stem in enumerate(stems):
            height, width = 6 + k, 9
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
                base / "images" / split / f"{stem}.jpg"
            )
            annotation = rng.integers(0, 151, (height, width), dtype=np.uint8)
            annotation[0, :3] = (0, 1, 150)
            Image.fromarray(annotation).save(base / "annotations" / split / f"{stem}.png")
    (base / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n1,0.1576,11664,1172,wall\n2,0.1,1,1,building;edifice\n"
    )
    (base / "sceneCategories.txt").write_text("ADE_train_00000001 airport_terminal\n")
    return base


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with the bytes of each file (None for a folder)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.array(img)


def test_reduce_zero_label_shifts_classes_and_ignores_other():
    values = np.arange(151, dtype=np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(values), [255, *range(150)])


def test_common_convention_writes_shifted_labels_and_lists(tmp_path):
    base = make_ade(tmp_path)
    originals = {p: p.read_bytes() for p in (base / "annotations").rglob("*.png")}
    main(["--root", str(tmp_path)])

    lines = (tmp_path / "list/training.txt").read_text().splitlines()
    assert lines[0] == (
        f"{ADE}/images/training/ADE_train_00000001.jpg {ADE}/annotations_150/training/ADE_train_00000001.png"
    )
    assert lines == sorted(lines) and len(lines) == 3
    for image_path, label_path in make_dataset("val", str(tmp_path), str(tmp_path / "list/validation.txt")):
        annotation = read_png(Path(image_path.replace("/images/", "/annotations/").replace(".jpg", ".png")))
        label = read_png(Path(label_path))
        np.testing.assert_array_equal(label, np.where(annotation == 0, 255, annotation.astype(int) - 1))
        assert label[0, :3].tolist() == [255, 0, 149]
    assert all(p.read_bytes() == data for p, data in originals.items())  # the originals stay as they were


def test_pirat_convention_lists_the_original_annotations(tmp_path):
    base = make_ade(tmp_path)
    main(["--root", str(tmp_path), "--convention", "pirat"])
    assert not (base / "annotations_150").exists()
    assert not (tmp_path / "list/training.txt").exists()
    pairs = make_dataset("train", str(tmp_path), str(tmp_path / "list/training_151.txt"))
    assert [Path(label).parent for _, label in pairs] == [base / "annotations/training"] * 3
    assert read_png(Path(pairs[0][1]))[0, :3].tolist() == [0, 1, 150]
    assert (tmp_path / "list/validation_151.txt").read_text() == (
        f"{ADE}/images/validation/ADE_val_00000001.jpg {ADE}/annotations/validation/ADE_val_00000001.png\n"
    )


def test_rerun_keeps_labels_and_refuses_a_changed_list_unless_overwrite(tmp_path):
    base = make_ade(tmp_path)
    main(["--root", str(tmp_path)])
    label = base / "annotations_150/training/ADE_train_00000001.png"
    converted = read_png(label)
    Image.fromarray(np.zeros_like(converted)).save(label)
    main(["--root", str(tmp_path)])
    assert read_png(label).max() == 0  # kept
    main(["--root", str(tmp_path), "--overwrite"])
    np.testing.assert_array_equal(read_png(label), converted)

    (tmp_path / "list/validation.txt").write_text("edited by hand\n")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="validation.txt' exists with other content; pass --overwrite"):
        main(["--root", str(tmp_path)])
    assert snapshot(tmp_path) == before
    main(["--root", str(tmp_path), "--overwrite"])
    assert (tmp_path / "list/validation.txt").read_text().startswith(f"{ADE}/images/validation/")


def _no_annotation_folder(base: Path) -> None:
    shutil.rmtree(base / "annotations/validation")


def _value_151(base: Path) -> None:
    path = base / "annotations/validation/ADE_val_00000001.png"
    annotation = read_png(path)
    annotation[2, 3] = 151
    Image.fromarray(annotation).save(path)


def _wrong_size(base: Path) -> None:
    Image.fromarray(np.ones((6, 8), dtype=np.uint8)).save(base / "annotations/validation/ADE_val_00000001.png")


def _no_images(base: Path) -> None:
    (base / "images/validation/ADE_val_00000001.jpg").unlink()
    (base / "annotations/validation/ADE_val_00000001.png").unlink()


BREAKERS = {
    "no ADEChallengeData2016": (shutil.rmtree, f"{ADE}' not found; pass --root the folder that holds {ADE}/"),
    "no annotations folder": (_no_annotation_folder, "annotations/validation' not found; unpack"),
    "image without annotation": (
        lambda base: (base / "annotations/training/ADE_train_00000003.png").unlink(),
        "1 'training' image.s. have no annotation, e.g. '.*ADE_train_00000003.png'",
    ),
    "no images": (_no_images, "no '\\*.jpg' images in '.*images/validation'"),
    "value 151": (_value_151, "'.*ADE_val_00000001.png' holds value 151; ADE20K annotations hold 0"),
    "size mismatch": (_wrong_size, "ADE_val_00000001.png' is 6x8 but image '.*ADE_val_00000001.jpg' is 6x9"),
}


@pytest.mark.parametrize("convention", ["common", "pirat"])
@pytest.mark.parametrize("broken", sorted(BREAKERS))
def test_a_missing_piece_is_one_line_and_nothing_is_written(tmp_path, broken, convention):
    breaker, message = BREAKERS[broken]
    breaker(make_ade(tmp_path))
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=message) as caught:
        main(["--root", str(tmp_path), "--convention", convention])
    assert "\n" not in str(caught.value)
    assert snapshot(tmp_path) == before


def test_command_line_error_exits_2_with_one_line(tmp_path):
    _value_151(make_ade(tmp_path))
    before = snapshot(tmp_path)
    command = [sys.executable, "-m", "tool_data.ade20k", "--root", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: annotation '")
    assert "holds value 151" in proc.stderr
    assert snapshot(tmp_path) == before


def test_names_and_colors_files_load_for_both_conventions():
    folder = ROOT / "dataset/ade20k"
    names, colors = load_names_colors(str(folder / "ade20k_names.txt"), str(folder / "ade20k_colors.txt"), 150)
    names_151, colors_151 = load_names_colors(
        str(folder / "ade20k_151_names.txt"), str(folder / "ade20k_151_colors.txt"), 151
    )
    assert names[:4] == ["wall", "building", "sky", "floor"] and names[-1] == "flag" and len(set(names)) == 150
    assert colors[:3].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert names_151 == ["other", *names] and colors_151[0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(colors_151[1:], colors)
    # mmsegmentation's palette gives road (6) and skyscraper (48) the same grey; every other colour is distinct
    assert colors[6].tolist() == colors[48].tolist() == [140, 140, 140]
    assert len({tuple(c) for c in colors_151.tolist()}) == 150


def test_object_info_names_that_differ_are_warned_about(tmp_path, caplog):
    base = make_ade(tmp_path)
    names = load_names_colors(
        str(ROOT / "dataset/ade20k/ade20k_names.txt"), str(ROOT / "dataset/ade20k/ade20k_colors.txt"), 150
    )[0]
    assert name_mismatches(base, names) == []
    (base / "objectInfo150.csv").unlink()
    (base / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n"
        "2\t0.1\t1\t1\tbuilding, edifice\n22 \t0.0074\t709\t75\tlake\n"
        "45\t0.0019\t549\t46\tchest of drawers, chest, bureau, dresser\n"
        "90\t0.0007\t618\t53\ttelevision, television receiver, television set\n"
    )
    with caplog.at_level(logging.WARNING, logger="tool_data.ade20k"):
        main(["--root", str(tmp_path), "--convention", "pirat"])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{base / 'objectInfo150.txt'} class 22 is 'lake' but ade20k_names.txt line 22 is 'water'"
    ]
    (base / "objectInfo150.txt").unlink()
    assert name_mismatches(base, names) == []  # no objectInfo150: nothing to compare, not an error
