"""ADE20K (SceneParsing, ``ADEChallengeData2016``) list files, and the common 150-class labels.

    python -m tool_data.ade20k --root dataset/ade20k [--convention common|pirat] [--overwrite]

``--root`` (the config's ``data_root``) holds ``ADEChallengeData2016/`` with ``images/{training,validation}/*.jpg``
and ``annotations/{training,validation}/*.png`` (0 = "other", 1..150 = the classes of ``objectInfo150``).
Two label conventions:

- ``common`` (default; mmsegmentation's ``reduce_zero_label``, the usual benchmark): 150 classes, value v -> v - 1
  and 0 -> 255 (ignored), written to ``ADEChallengeData2016/annotations_150/<split>/<stem>.png``; lists
  ``list/training.txt`` and ``list/validation.txt``.
- ``pirat`` (PIR-AT, Croce, Singh & Hein, ECCV 2024, ``semseg/datasets/ade.py``): the annotations as they are,
  151 classes with 0 a class; lists ``list/training_151.txt`` and ``list/validation_151.txt``.

Every pair is checked before anything is written (annotation present, sizes equal from the image header, every
label value at most 150); on an error nothing is written. Converted labels that exist are kept and a list that
exists with other content is refused, unless ``--overwrite``. Class names and colours for both conventions are
in ``dataset/ade20k/`` (docs/data.md).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from util.data.dataset import load_names_colors, read_label
from util.errors import ArgumentParser, UserError, run_main

logger = logging.getLogger(__name__)

BASE = "ADEChallengeData2016"
SPLITS = ("training", "validation")
CLASSES = 150
IGNORE_LABEL = 255
CONVERTED_DIR = "annotations_150"
LIST_NAMES = {"common": "{split}.txt", "pirat": "{split}_151.txt"}
REPO = Path(__file__).resolve().parents[1]
NAMES_PATH = REPO / "dataset/ade20k/ade20k_names.txt"
COLORS_PATH = REPO / "dataset/ade20k/ade20k_colors.txt"


class Pair(NamedTuple):
    """One sample, paths relative to ``--root``: the image, its original annotation and the listed label."""

    image: str
    annotation: str
    label: str


def _build_lut() -> np.ndarray:
    """256-entry table of ``reduce_zero_label``: 0 -> 255, v -> v - 1 for v in 1..150, the rest 255."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    lut[1 : CLASSES + 1] = np.arange(CLASSES, dtype=np.uint8)
    return lut


REDUCE_ZERO_LABEL = _build_lut()


def reduce_zero_label(annotation: np.ndarray) -> np.ndarray:
    """Map an ADE20K annotation (0..150) to the common convention (0..149, unlabelled 0 -> 255)."""
    return REDUCE_ZERO_LABEL[np.asarray(annotation, dtype=np.uint8)]


def find_pairs(root: Path, split: str, convention: str) -> list[Pair]:
    """Sorted pairs of ``images/<split>/*.jpg`` and their annotations; UserError naming the first missing piece."""
    folders = {kind: root / BASE / kind / split for kind in ("images", "annotations")}
    for folder in folders.values():
        if not folder.is_dir():
            raise UserError(f"'{folder}' not found; unpack ADEChallengeData2016.zip into '{root}' (it holds {BASE}/)")
    stems = sorted(name[: -len(".jpg")] for name in os.listdir(folders["images"]) if name.endswith(".jpg"))
    if not stems:
        raise UserError(f"no '*.jpg' images in '{folders['images']}'; re-extract ADEChallengeData2016.zip")
    missing = [stem for stem in stems if not (folders["annotations"] / f"{stem}.png").is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} '{split}' image(s) have no annotation, e.g. "
            f"'{folders['annotations'] / (missing[0] + '.png')}'; re-extract ADEChallengeData2016.zip"
        )
    annotated = {name[: -len(".png")] for name in os.listdir(folders["annotations"]) if name.endswith(".png")}
    orphans = sorted(annotated - set(stems))
    if orphans:
        logger.warning(
            "%d '%s' annotation(s) have no image and are not listed, e.g. %s", len(orphans), split, orphans[0]
        )
    labels = f"{BASE}/{CONVERTED_DIR if convention == 'common' else 'annotations'}/{split}"
    return [
        Pair(f"{BASE}/images/{split}/{s}.jpg", f"{BASE}/annotations/{split}/{s}.png", f"{labels}/{s}.png")
        for s in stems
    ]


def check_pair(root: Path, pair: Pair) -> None:
    """UserError when the annotation is unreadable, holds a value above 150 or differs in size from its image
    (the image's size is read from its header, its pixels are not decoded)."""
    image_path, annotation_path = root / pair.image, root / pair.annotation
    try:
        with Image.open(image_path) as img:
            width, height = img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"image '{image_path}' cannot be read ({err}); re-extract ADEChallengeData2016.zip") from err
    annotation = read_label(str(annotation_path))
    if annotation.shape != (height, width):
        raise UserError(
            f"annotation '{annotation_path}' is {annotation.shape[0]}x{annotation.shape[1]} but image "
            f"'{image_path}' is {height}x{width} (HxW); they must have the same size"
        )
    top = int(annotation.max()) if annotation.size else 0
    if top > CLASSES:
        raise UserError(
            f"annotation '{annotation_path}' holds value {top}; ADE20K annotations hold 0 (other) and 1..{CLASSES}"
        )


def _each(fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """``fn`` of every item, a few at a time (PIL decodes and encodes without the GIL), in order; the first
    error stops the rest."""
    pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1))
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(cancel_futures=True)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file and rename it, so no half-written file is left behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot write '{path}' ({err}); check that '{path.parent}' is writable") from err


def _convert_label(root: Path, pair: Pair) -> None:
    label = reduce_zero_label(read_label(str(root / pair.annotation)))
    _write_atomic(root / pair.label, lambda tmp: Image.fromarray(label).save(tmp, format="PNG"))


def read_object_info(base: Path) -> tuple[Path, dict[int, str]] | None:
    """``Idx -> Name`` of ``objectInfo150.csv`` (or the older tab-separated ``.txt``); None when neither is there.

    Raises:
        ValueError: the file has no Idx and Name columns.
    """
    path = next((p for p in (base / "objectInfo150.csv", base / "objectInfo150.txt") if p.is_file()), None)
    if path is None:
        return None
    lines = (_read_text(path) or "").splitlines()
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    rows = [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)]
    header = [cell.lower() for cell in rows[0]] if rows else []
    if "idx" not in header or "name" not in header:
        raise ValueError(f"{path} has no Idx and Name columns")
    idx, name = header.index("idx"), header.index("name")
    return path, {int(row[idx]): row[name] for row in rows[1:] if len(row) > max(idx, name) and row[idx].isdigit()}


def _first_word(name: str) -> str:
    """'building' of 'building, edifice' (the .txt), 'building;edifice' (the .csv) and 'building'."""
    return (re.split(r"[;,\s]+", name.strip()) + [""])[0].lower()


def name_mismatches(base: Path, names: Sequence[str]) -> list[str]:
    """A note for each objectInfo150 class whose first word differs from ``names`` ([] without the file)."""
    try:
        info = read_object_info(base)
    except ValueError as err:
        return [f"{err}; class names not checked"]
    if info is None:
        return []
    path, found = info
    return [
        f"{path} class {i} is '{found[i]}' but {NAMES_PATH.name} line {i} is '{names[i - 1]}'"
        for i in sorted(found)
        if 1 <= i <= len(names) and _first_word(found[i]) != _first_word(names[i - 1])
    ]


def check_all(root: Path, pairs: Sequence[Pair]) -> None:
    """:func:`check_pair` on every pair, a few at a time; UserError on the first bad one in list order."""
    for done, _ in enumerate(_each(lambda pair: check_pair(root, pair), pairs), start=1):
        if done % 5000 == 0:
            logger.info("checked %d of %d annotations", done, len(pairs))


def plan_lists(root: Path, pairs: dict[str, list[Pair]], convention: str, overwrite: bool) -> dict[Path, str]:
    """The text of each list file; UserError when one exists with other content while not ``overwrite``."""
    lists = {
        root / "list" / LIST_NAMES[convention].format(split=split): "".join(f"{p.image} {p.label}\n" for p in members)
        for split, members in pairs.items()
    }
    changed = [path for path, text in lists.items() if path.exists() and _read_text(path) != text]
    if changed and not overwrite:
        raise UserError(f"list file '{changed[0]}' exists with other content; pass --overwrite to replace it")
    if (root / "list").exists() and not (root / "list").is_dir():
        raise UserError(f"'{root / 'list'}' is a file, not a folder; move it so the lists can be written there")
    return lists


def write_labels(root: Path, pairs: Sequence[Pair], overwrite: bool) -> None:
    """Write the common convention's label of every pair; one that exists is kept unless ``overwrite``."""
    todo = [pair for pair in pairs if overwrite or not (root / pair.label).exists()]
    for _ in _each(lambda pair: _convert_label(root, pair), todo):
        pass
    kept = len(pairs) - len(todo)
    hint = " (pass --overwrite to regenerate them)" if kept else ""
    logger.info("wrote %d labels to %s/%s, kept %d existing%s", len(todo), BASE, CONVERTED_DIR, kept, hint)


def convert(root: str | Path, convention: str = "common", overwrite: bool = False) -> list[Path]:
    """Check every pair, then write the converted labels (common only) and the two list files.

    Returns:
        The list files, training first.

    Raises:
        UserError: a missing folder, image or annotation, a bad annotation, or an existing list with other
            content while not ``overwrite``; nothing is written in any of these cases.
    """
    root = Path(root)
    if not (root / BASE).is_dir():
        raise UserError(
            f"'{root / BASE}' not found; pass --root the folder that holds {BASE}/ "
            "(unpack ADEChallengeData2016.zip there)"
        )
    names, _ = load_names_colors(str(NAMES_PATH), str(COLORS_PATH), CLASSES)
    for note in name_mismatches(root / BASE, names):
        logger.warning("%s", note)  # the names ship with the repository: only worth a look
    pairs = {split: find_pairs(root, split, convention) for split in SPLITS}
    every = [pair for members in pairs.values() for pair in members]
    check_all(root, every)
    lists = plan_lists(root, pairs, convention, overwrite)

    if convention == "common":
        write_labels(root, every, overwrite)
    for path, text in lists.items():
        _write_atomic(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        logger.info("%s: %d images", path, text.count("\n"))
    return list(lists)


def main(argv: Sequence[str] | None = None) -> None:
    """Write the ADE20K list files (and the common convention's labels); see the module docstring."""
    parser = ArgumentParser(
        prog="python -m tool_data.ade20k",
        description="Write ADE20K list files: common (150 classes, 0 ignored) or pirat (151, 0 a class).",
    )
    parser.add_argument("--root", required=True, help=f"the folder holding {BASE}/ (the config's data_root)")
    parser.add_argument(
        "--convention",
        choices=sorted(LIST_NAMES),
        default="common",
        help="common: 150 classes, 0 -> 255, writes annotations_150/ (default); pirat: 151 classes as PIR-AT",
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate converted labels and replace lists")
    args = parser.parse_args(argv)
    convert(args.root, args.convention, args.overwrite)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(main)
