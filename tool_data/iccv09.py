"""Stanford Background (Gould et al., ICCV 2009, ``iccv09Data``) -> label PNGs and list files.

    python -m tool_data.iccv09 --root dataset/stanford/iccv09Data

writes ``label/<id>.png`` (the ``labels/<id>.regions.txt`` matrices, -1 -> 255) and ``list/{train,val}.txt``,
a split fixed by ``--seed``. Every regions file is checked before anything is written (docs/data.md).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from util.errors import ArgumentParser, UserError, run_main

logger = logging.getLogger(__name__)

CLASS_NAMES = ("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object")
UNKNOWN = -1
IGNORE_LABEL = 255
VAL_FRACTION = 0.2
SEED = 0

IMAGE_DIR = "images"
REGIONS_DIR = "labels"
LABEL_DIR = "label"
LIST_DIR = "list"
REGIONS_SUFFIX = ".regions.txt"


class Conversion(NamedTuple):
    """What :func:`convert` did: the sorted ids of each split and the label PNGs written / kept."""

    train: list[str]
    val: list[str]
    written: int
    unchanged: int


def _name_the_bad_token(path: str, rows: list[list[str]]) -> None:
    """Raise the UserError that names the line and token of a regions file NumPy cannot parse (the slow path)."""
    for line_no, row in enumerate(rows, start=1):
        for token in row:
            try:
                value = int(token)
            except ValueError:
                raise UserError(
                    f"regions file '{path}' line {line_no}: {token!r} is not an integer; expected class indices -1..7"
                ) from None
            if not UNKNOWN <= value < len(CLASS_NAMES):
                raise UserError(
                    f"regions file '{path}' line {line_no}: value {value} outside -1..{len(CLASS_NAMES) - 1}"
                )
    raise UserError(f"regions file '{path}' cannot be parsed as integers; re-extract iccv09Data")


def read_regions(path: str) -> np.ndarray:
    """Parse a ``*.regions.txt`` matrix into an HxW int16 array of values in -1..7.

    Raises:
        UserError: the file cannot be read, holds a non-integer or out-of-range value, an empty
            row, or rows of different lengths; the message names the file and line.
    """
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read regions file '{path}' ({err}); re-extract iccv09Data") from err
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError(f"regions file '{path}' is empty; re-extract iccv09Data")

    rows = [line.split() for line in lines]
    width = len(rows[0])
    for line_no, row in enumerate(rows, start=1):
        if len(row) != width:
            raise UserError(
                f"regions file '{path}' line {line_no}: {len(row)} values, expected "
                f"{width} as on line 1 (one text row per image row)"
            )
    try:
        values = np.array([token for row in rows for token in row], dtype=np.int64)
    except (ValueError, OverflowError):
        values = None
    if values is None:
        _name_the_bad_token(path, rows)
    values = values.reshape(len(rows), width)

    bad = np.argwhere((values < UNKNOWN) | (values >= len(CLASS_NAMES)))
    if bad.size:
        row, col = bad[0]
        raise UserError(
            f"regions file '{path}' line {row + 1}: value {values[row, col]} (column "
            f"{col + 1}) outside -1..{len(CLASS_NAMES) - 1}"
        )
    return values.astype(np.int16)


def regions_to_label(regions: np.ndarray) -> np.ndarray:
    """Map region values to a uint8 label map: classes 0..7 stay, unknown (-1) becomes 255."""
    regions = np.asarray(regions)
    return np.where(regions == UNKNOWN, IGNORE_LABEL, regions).astype(np.uint8)


def image_size(path: str) -> tuple[int, int]:
    """Decode an image and return its (height, width); a corrupt file is a UserError."""
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"image '{path}' cannot be decoded ({err}); re-extract iccv09Data or remove the image and its regions file"
        ) from err
    return height, width


def split_ids(ids: Sequence[str], val_fraction: float = VAL_FRACTION, seed: int = SEED) -> tuple[list[str], list[str]]:
    """Split image ids into sorted (train, val) lists, fixed by ``seed`` (see the module docstring).

    Raises:
        UserError: ``val_fraction`` is not in (0, 1) or leaves one split empty.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    num_val = round(len(ids) * val_fraction)
    if not 0 < num_val < len(ids):
        empty = "val" if num_val == 0 else "train"
        raise UserError(
            f"val fraction {val_fraction} of {len(ids)} images leaves an empty "
            f"{empty} split; choose another --val-fraction"
        )
    order = sorted(ids, key=lambda id_: hashlib.sha256(f"{seed}/{id_}".encode()).hexdigest())
    return sorted(order[num_val:]), sorted(order[:num_val])


def find_ids(root: str) -> list[str]:
    """Sorted ids of ``root/images/*.jpg``; each must have ``root/labels/<id>.regions.txt``."""
    image_dir = os.path.join(root, IMAGE_DIR)
    regions_dir = os.path.join(root, REGIONS_DIR)
    for folder in (image_dir, regions_dir):
        if not os.path.isdir(folder):
            raise UserError(
                f"'{folder}' not found; pass the unpacked iccv09Data folder (holding "
                f"{IMAGE_DIR}/ and {REGIONS_DIR}/) with --root"
            )
    ids = sorted(name[: -len(".jpg")] for name in os.listdir(image_dir) if name.endswith(".jpg"))
    if not ids:
        raise UserError(f"no '*.jpg' images in '{image_dir}'; check --root")
    missing = [i for i in ids if not os.path.isfile(os.path.join(regions_dir, i + REGIONS_SUFFIX))]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) in '{image_dir}' have no regions file, e.g. "
            f"'{os.path.join(regions_dir, missing[0] + REGIONS_SUFFIX)}'; re-extract "
            "iccv09Data or remove those images"
        )
    orphans = sorted(
        {name[: -len(REGIONS_SUFFIX)] for name in os.listdir(regions_dir) if name.endswith(REGIONS_SUFFIX)} - set(ids)
    )
    if orphans:
        logger.warning(
            "%d regions file(s) have no image and are skipped, e.g. %s%s", len(orphans), orphans[0], REGIONS_SUFFIX
        )
    return ids


def _read_existing_label(path: str) -> np.ndarray | None:
    """The pixels of an existing label PNG, or None when it cannot be read (so it differs)."""
    try:
        with Image.open(path) as img:
            return np.array(img) if img.mode == "L" else None
    except (OSError, SyntaxError, ValueError):
        return None


def _read_existing_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _write_atomic(path: str, data: bytes) -> None:
    """Write via a temporary file and rename, so no half-written file is left behind."""
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot write '{path}' ({err}); check that the dataset folder is writable") from err


def _png_bytes(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_labels(root: str, ids: list[str]) -> dict[str, np.ndarray]:
    """Each id's label map, after checking its regions file against its image (UserError on the first bad one)."""
    labels: dict[str, np.ndarray] = {}
    for id_ in ids:
        regions_path = os.path.join(root, REGIONS_DIR, id_ + REGIONS_SUFFIX)
        image_path = os.path.join(root, IMAGE_DIR, id_ + ".jpg")
        regions = read_regions(regions_path)
        height, width = image_size(image_path)
        if regions.shape != (height, width):
            rows, cols = regions.shape
            raise UserError(
                f"regions file '{regions_path}' is {rows}x{cols} (rows x values per "
                f"row) but image '{image_path}' is {height}x{width} (HxW); they must "
                "have the same size"
            )
        labels[id_] = regions_to_label(regions)
    return labels


def _plan_writes(root: str, labels: dict[str, np.ndarray], train: list[str], val: list[str]) -> tuple:
    """(label writes, list writes, existing files that differ, labels already equal) of a conversion."""
    label_writes: list[tuple[str, np.ndarray]] = []
    conflicts: list[str] = []
    unchanged = 0
    for id_, label in labels.items():
        path = os.path.join(root, LABEL_DIR, id_ + ".png")
        if os.path.lexists(path):
            if np.array_equal(_read_existing_label(path), label):
                unchanged += 1
                continue
            conflicts.append(path)
        label_writes.append((path, label))
    list_writes: list[tuple[str, str]] = []
    for split, members in (("train", train), ("val", val)):
        path = os.path.join(root, LIST_DIR, f"{split}.txt")
        text = "".join(f"{IMAGE_DIR}/{i}.jpg {LABEL_DIR}/{i}.png\n" for i in members)
        if os.path.lexists(path):
            if _read_existing_text(path) == text:
                continue
            conflicts.insert(0, path)  # a changed list (other seed?) is the likelier cause
        list_writes.append((path, text))
    return label_writes, list_writes, conflicts, unchanged


def convert(root: str, val_fraction: float = VAL_FRACTION, seed: int = SEED, overwrite: bool = False) -> Conversion:
    """Write ``label/<id>.png`` and ``list/{train,val}.txt`` under an iccv09Data root.

    Args:
        root: the unpacked ``iccv09Data`` folder (holding ``images/`` and ``labels/``).
        val_fraction: share of images in the val list (0.2: the usual 572/143 split).
        seed: fixes the split (see the module docstring).
        overwrite: replace existing outputs whose content differs.

    Raises:
        UserError: missing folders or files, a malformed regions file, a regions matrix whose
            size differs from its image, or existing outputs that differ while not ``overwrite``.
            Nothing is written in any of these cases.
    """
    if not os.path.isdir(root):
        raise UserError(
            f"iccv09Data root '{root}' not found; pass the unpacked iccv09Data folder "
            "(holding images/ and labels/) with --root"
        )
    ids = find_ids(root)
    train, val = split_ids(ids, val_fraction, seed)

    labels = _read_labels(root, ids)  # all checked first: a bad file leaves no half-converted folder

    label_writes, list_writes, conflicts, unchanged = _plan_writes(root, labels, train, val)
    if conflicts and not overwrite:
        raise UserError(
            f"{len(conflicts)} existing file(s) differ from what the conversion "
            f"writes, e.g. '{conflicts[0]}'; pass --overwrite to replace them (or "
            "keep the --seed/--val-fraction that made them)"
        )

    for path, label in label_writes:
        _write_atomic(path, _png_bytes(label))
    for path, text in list_writes:
        _write_atomic(path, text.encode("utf-8"))
    logger.info(
        "%d images: wrote %d label PNGs (%d unchanged), %d list file(s); train %d, val %d",
        len(ids),
        len(label_writes),
        unchanged,
        len(list_writes),
        len(train),
        len(val),
    )
    return Conversion(train, val, len(label_writes), unchanged)


def main(argv: Sequence[str] | None = None) -> None:
    """Convert regions.txt to label PNGs and write the train/val lists (see module docstring)."""
    parser = ArgumentParser(
        prog="python -m tool_data.iccv09",
        description="Write Stanford Background (iccv09Data) label/<id>.png and list/{train,val}.txt.",
    )
    parser.add_argument("--root", required=True, help="the unpacked iccv09Data folder holding images/ and labels/")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help=f"share of images in list/val.txt (default: {VAL_FRACTION}, 572/143)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"fixes the train/val split (default: {SEED})")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing label PNGs and list files that differ"
    )
    args = parser.parse_args(argv)
    convert(args.root, val_fraction=args.val_fraction, seed=args.seed, overwrite=args.overwrite)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(main)
