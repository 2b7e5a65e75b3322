"""Cityscapes labelId -> trainId conversion and list files, as cityscapesScripts and semseg use.

The official ``*_gtFine_labelIds.png`` maps hold the 34 dataset ids; training uses the 19
``trainId`` classes with everything else as 255 (ignore). Run once after unpacking the dataset::

    python -m tool_data.cityscapes --root dataset/cityscapes

It writes ``*_gtFine_labelTrainIds.png`` next to each ``*_gtFine_labelIds.png`` (like
cityscapesScripts' ``createTrainIdLabelImgs.py``) and the semseg list files
``list/fine_train.txt`` and ``list/fine_val.txt``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from util.data.dataset import read_label
from util.errors import ArgumentParser, UserError, run_main

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255


class Label(NamedTuple):
    """One row of cityscapesScripts' ``labels.py`` (the columns this project needs)."""

    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# cityscapesScripts helpers/labels.py, in order. trainId 255 means "ignored in training".
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
    Label("license plate", -1, -1, (0, 0, 142)),
)


def _build_lut() -> np.ndarray:
    """256-entry labelId -> trainId table; ids not in LABELS (and trainId -1) map to ignore."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label in LABELS:
        if 0 <= label.id < 256 and 0 <= label.train_id < 255:
            lut[label.id] = label.train_id
    return lut


ID_TO_TRAIN_ID = _build_lut()


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds array to trainIds (uint8, unknown ids -> 255)."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
            raise ValueError("labelIds must be in 0..255")
        label_ids = label_ids.astype(np.uint8)
    return ID_TO_TRAIN_ID[label_ids]


def _save_png(array: np.ndarray, path: str) -> None:
    """Write a uint8 map as a grayscale PNG via a temporary file, so no half-written file stays."""
    tmp = path + ".tmp"
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot write '{path}' ({err}); check that the dataset folder is writable") from err


def convert_split(root: str, split: str, overwrite: bool = False) -> list[str]:
    """Write trainId PNGs for one split and return its sorted list-file lines.

    Args:
        root: Cityscapes root holding ``gtFine/`` and ``leftImg8bit/``.
        split: split folder name, e.g. ``'train'``.
        overwrite: rewrite trainId files that already exist (otherwise they are kept).
    """
    split_dir = os.path.join(root, "gtFine", split)
    if not os.path.isdir(split_dir):
        raise UserError(
            f"'{split_dir}' not found; unpack gtFine_trainvaltest.zip into '{root}' or choose other --splits"
        )
    suffix = "_gtFine_labelIds.png"
    label_paths = sorted(glob.glob(os.path.join(split_dir, "*", "*" + suffix)))
    if not label_paths:
        raise UserError(f"no '*{suffix}' files in '{split_dir}/<city>/'; check --root")

    lines = []
    written = skipped = 0
    missing_images = []
    for label_path in label_paths:
        city = os.path.basename(os.path.dirname(label_path))
        name = os.path.basename(label_path)[: -len(suffix)]
        train_rel = f"gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png"
        image_rel = f"leftImg8bit/{split}/{city}/{name}_leftImg8bit.png"
        train_path = os.path.join(root, train_rel)
        if os.path.exists(train_path) and not overwrite:
            skipped += 1
        else:
            _save_png(label_ids_to_train_ids(read_label(label_path)), train_path)
            written += 1
        if not os.path.isfile(os.path.join(root, image_rel)):
            missing_images.append(image_rel)
        lines.append(f"{image_rel} {train_rel}")

    logger.info(
        "%s: wrote %d trainIds maps, kept %d existing%s",
        split,
        written,
        skipped,
        " (pass --overwrite to regenerate them)" if skipped else "",
    )
    if missing_images:
        raise UserError(
            f"{len(missing_images)} '{split}' image(s) missing under '{root}', e.g. "
            f"'{missing_images[0]}'; unpack leftImg8bit_trainvaltest.zip into the root"
        )
    return sorted(lines)


def write_list(path: str, lines: Sequence[str], overwrite: bool = False) -> None:
    """Write a list file; refuse to replace a different existing one unless ``overwrite``."""
    text = "".join(line + "\n" for line in lines)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                same = f.read() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            logger.info("list %s is up to date (%d lines)", path, len(lines))
            return
        if not overwrite:
            raise UserError(
                f"list file '{path}' already exists with different content; pass "
                "--overwrite to replace it or choose another --list-dir"
            )
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise UserError(f"cannot write list file '{path}' ({err}); choose another --list-dir") from err
    logger.info("wrote %s (%d lines)", path, len(lines))


def main(argv: Sequence[str] | None = None) -> None:
    """Convert labelIds to trainIds and write ``fine_<split>.txt`` lists (see module docstring)."""
    parser = ArgumentParser(
        prog="python -m tool_data.cityscapes",
        description="Write Cityscapes *_gtFine_labelTrainIds.png and fine_<split>.txt lists.",
    )
    parser.add_argument("--root", required=True, help="Cityscapes root holding gtFine/ and leftImg8bit/")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to convert (default: train val)")
    parser.add_argument("--list-dir", default=None, help="where to write fine_<split>.txt (default: <root>/list)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate existing trainIds PNGs and list files")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.root):
        raise UserError(
            f"Cityscapes root '{args.root}' not found; pass the folder holding gtFine/ and leftImg8bit/ with --root"
        )
    if not os.path.isdir(os.path.join(args.root, "gtFine")):
        raise UserError(
            f"'{os.path.join(args.root, 'gtFine')}' not found; unpack gtFine_trainvaltest.zip into '{args.root}'"
        )
    list_dir = args.list_dir or os.path.join(args.root, "list")
    try:
        os.makedirs(list_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create list directory '{list_dir}' ({err}); choose another --list-dir") from err

    for split in args.splits:
        lines = convert_split(args.root, split, overwrite=args.overwrite)
        write_list(os.path.join(list_dir, f"fine_{split}.txt"), lines, overwrite=args.overwrite)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(main)
