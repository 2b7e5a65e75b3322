"""List files for a PASCAL VOC 2012 folder laid out as VainF's / SAM-AT's code expects it, and for SBD as PIR-AT
trains on it.

    python -m tool_data.voc --root datasets/data [--overwrite] [--keep-val-overlap]

``--root`` holds ``VOCdevkit/VOC2012/`` (``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``) and,
for the augmented training set (VainF's ``year 2012_aug``), ``VOCdevkit/VOC2012/SegmentationClassAug`` with
``train_aug.txt`` in ``--root`` (where SAM-AT places it) or in ``ImageSets/Segmentation``. It writes, relative to
``--root`` (the config's ``data_root``): ``list/train.txt`` and ``list/val.txt`` (``SegmentationClass`` masks)
and, when the augmented set is there, ``list/train_aug.txt`` (``SegmentationClassAug`` masks) - the same image
and mask pairs VainF's ``VOCSegmentation`` reads.

When ``--root`` also holds ``VOCaug/dataset/`` (SBD, Hariharan et al., ICCV 2011: ``benchmark_RELEASE/dataset``
with ``img/<id>.jpg``, ``cls/<id>.mat`` and ``trainval.txt``, as PIR-AT's ``semseg/datasets/pascal_aug.py`` reads
it), each ``GTcls.Segmentation`` listed in ``trainval.txt`` becomes ``VOCaug/dataset/cls_png/<id>.png`` and
``list/sbd_trainval.txt`` lists the pairs, without the images of VOC 2012's segmentation val set (SBD's trainval
holds part of it) unless ``--keep-val-overlap``. Every listed file is checked first: on an error nothing is written.
"""

from __future__ import annotations

import io
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from util.errors import ArgumentParser, UserError, run_main

logger = logging.getLogger(__name__)

VOC = Path("VOCdevkit/VOC2012")
SPLITS = {"train": "SegmentationClass", "val": "SegmentationClass", "train_aug": "SegmentationClassAug"}
VOC_VAL = VOC / "ImageSets/Segmentation/val.txt"

SBD = Path("VOCaug/dataset")
SBD_PNG = SBD / "cls_png"
SBD_SPLIT = "sbd_trainval"
SBD_CLASSES = 21
IGNORE_LABEL = 255
SBD_HINT = "unpack SBD's benchmark.tgz into --root and rename benchmark_RELEASE to VOCaug (PIR-AT's layout)"


Note = tuple[int, str]  # a logging level and a message, logged once everything is checked (an error stays one line)


class SbdPlan(NamedTuple):
    """What :func:`plan_sbd` checked: the list's text, the class-map PNGs to write (encoded, by path), how many
    existing PNGs are kept, and what was done about VOC 2012 val."""

    text: str
    pngs: dict[Path, bytes]
    kept: int
    note: Note


def _ids(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return [line for line in lines if line]


def _split_file(root: Path, split: str) -> Path | None:
    """Where the split's id list is: ImageSets/Segmentation, or train_aug.txt in the root as SAM-AT has it."""
    candidates = [root / VOC / "ImageSets/Segmentation" / f"{split}.txt"]
    if split == "train_aug":
        candidates.insert(0, root / "train_aug.txt")
    return next((p for p in candidates if p.is_file()), None)


def plan_voc(root: Path) -> dict[str, str]:
    """The text of each VOCdevkit list file to write; UserError naming the first missing piece."""
    texts = {}
    for split, masks in SPLITS.items():
        source = _split_file(root, split)
        if source is None:
            if split == "train_aug":
                continue
            raise UserError(
                f"'{root / VOC / 'ImageSets/Segmentation' / f'{split}.txt'}' not found; the VOC 2012 "
                f"devkit's segmentation split lists are needed"
            )
        if not (root / VOC / masks).is_dir():
            raise UserError(
                f"'{root / VOC / masks}' not found, needed by {source}; unpack "
                f"{'SBD-augmented masks (SegmentationClassAug)' if split == 'train_aug' else 'VOC 2012'} "
                f"there"
            )
        pairs = [(VOC / "JPEGImages" / f"{i}.jpg", VOC / masks / f"{i}.png") for i in _ids(source)]
        missing = [str(p) for pair in pairs for p in pair if not (root / p).is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} file(s) listed by {source} are missing under {root}, e.g. "
                f"'{missing[0]}'; check the devkit is complete"
            )
        texts[split] = "".join(f"{image} {mask}\n" for image, mask in pairs)
    return texts


def read_sbd_mat(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` (MATLAB v5) as an HxW uint8 class map.

    Raises:
        UserError: the file cannot be read, has no ``GTcls.Segmentation``, or that is not a 2-D map of 0..20 and 255.
    """
    import scipy.io  # only the SBD conversion needs SciPy: the VOC lists do not pay for importing it

    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (
        OSError,
        ValueError,
        TypeError,
        IndexError,
        NotImplementedError,
        zlib.error,
        scipy.io.matlab.MatReadError,
    ) as err:
        raise UserError(f"'{path}' cannot be read as a MATLAB v5 file ({err}); re-extract SBD's benchmark.tgz") from err
    segmentation = getattr(mat.get("GTcls"), "Segmentation", None)
    if segmentation is None:
        raise UserError(
            f"'{path}' holds no GTcls.Segmentation (an SBD cls/ file has it); re-extract SBD's benchmark.tgz"
        )
    seg = np.asarray(segmentation)
    if seg.ndim != 2 or seg.dtype.kind not in "uif":
        raise UserError(
            f"'{path}' GTcls.Segmentation is a {seg.dtype} array of shape {seg.shape}, not an HxW class map"
        )
    bad = (seg < 0) | ((seg >= SBD_CLASSES) & (seg != IGNORE_LABEL))
    if seg.dtype.kind == "f":
        bad |= seg != np.floor(seg)  # NaN included
    if bad.any():
        raise UserError(
            f"'{path}' GTcls.Segmentation holds value {seg[bad].flat[0]}; SBD class maps hold 0..{SBD_CLASSES - 1} "
            f"(and {IGNORE_LABEL} = ignore)"
        )
    return seg.astype(np.uint8)


def _sbd_ids(root: Path) -> list[str]:
    """The ids of SBD's trainval.txt whose image and .mat are there; UserError naming the first missing piece."""
    base = root / SBD
    for folder in ("img", "cls"):
        if not (base / folder).is_dir():
            raise UserError(f"'{base / folder}' not found; {SBD_HINT}")
    source = base / "trainval.txt"
    if not source.is_file():
        raise UserError(
            f"'{source}' not found; SBD ships train.txt and val.txt: write trainval.txt as the two one after the "
            f"other (cat train.txt val.txt > trainval.txt), as gluoncv's pascal_voc.py that makes this layout does"
        )
    ids = _ids(source)
    if not ids:
        raise UserError(f"'{source}' lists no images; {SBD_HINT}")
    missing = [p for i in ids for p in (base / "img" / f"{i}.jpg", base / "cls" / f"{i}.mat") if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} file(s) listed by {source} are missing, e.g. '{missing[0]}'; {SBD_HINT}")
    return ids


def _without_voc_val(root: Path, ids: list[str], keep_val_overlap: bool) -> tuple[list[str], Note]:
    """``ids`` less those in VOC 2012's segmentation val.txt (all of them with ``keep_val_overlap``), and the note
    that says so."""
    val_path = root / VOC_VAL
    if not val_path.is_file():
        if not keep_val_overlap:
            raise UserError(
                f"'{val_path}' not found, so SBD's trainval cannot be checked for VOC 2012 val images; unpack VOC 2012 "
                f"into '{root}' or pass --keep-val-overlap to list all of trainval"
            )
        return ids, (logging.WARNING, f"{val_path} not found: list/{SBD_SPLIT}.txt not checked for VOC 2012 val images")
    val = set(_ids(val_path))
    overlap = sum(i in val for i in ids)
    if keep_val_overlap:
        message = (
            f"list/{SBD_SPLIT}.txt holds {overlap} of the {len(val)} VOC 2012 val images (--keep-val-overlap, as "
            f"PIR-AT): a model trained on it has seen them, so its VOC val numbers are not held-out"
        )
        return ids, (logging.WARNING, message)
    note = (logging.INFO, f"removed {overlap} of {len(ids)} SBD trainval images that are in VOC 2012 val")
    return [i for i in ids if i not in val], note


def _check_sbd_map(root: Path, sbd_id: str) -> np.ndarray:
    """The class map of ``sbd_id``, checked against its image's size (read from the JPEG header)."""
    image_path, mat_path = root / SBD / "img" / f"{sbd_id}.jpg", root / SBD / "cls" / f"{sbd_id}.mat"
    seg = read_sbd_mat(mat_path)
    try:
        with Image.open(image_path) as img:
            width, height = img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"image '{image_path}' cannot be read ({err}); re-extract SBD's benchmark.tgz") from err
    if seg.shape != (height, width):
        raise UserError(
            f"'{mat_path}' GTcls.Segmentation is {seg.shape[0]}x{seg.shape[1]} but image '{image_path}' is "
            f"{height}x{width} (HxW); they must have the same size"
        )
    return seg


def _png_bytes(seg: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(seg).save(buffer, format="PNG")
    return buffer.getvalue()


def plan_sbd(root: Path, keep_val_overlap: bool = False, overwrite: bool = False) -> SbdPlan:
    """Check SBD's trainval under ``root`` (which holds ``VOCaug/dataset``) and encode its class maps.

    Every listed .mat is read and checked; the PNGs of those that have none yet (all with ``overwrite``) are
    encoded here, so that writing them cannot fail half-way on a bad file.

    Raises:
        UserError: a missing folder, list or file, a bad .mat, or VOC 2012's val.txt absent while not
            ``keep_val_overlap``.
    """
    ids = _sbd_ids(root)
    listed, note = _without_voc_val(root, ids, keep_val_overlap)
    pngs = {}
    for done, sbd_id in enumerate(ids, start=1):
        seg = _check_sbd_map(root, sbd_id)
        path = root / SBD_PNG / f"{sbd_id}.png"
        if overwrite or not path.exists():
            pngs[path] = _png_bytes(seg)
        if done % 2000 == 0:
            logger.info("checked %d of %d SBD class maps", done, len(ids))
    text = "".join(f"{SBD / 'img' / f'{i}.jpg'} {SBD_PNG / f'{i}.png'}\n" for i in listed)
    return SbdPlan(text, pngs, len(ids) - len(pngs), note)


def plan_lists(
    root: Path, keep_val_overlap: bool = False, overwrite: bool = False
) -> tuple[dict[str, str], SbdPlan | None, list[Note]]:
    """The text of each list file to write, the SBD plan (None without ``VOCaug/dataset``) and the notes to log;
    UserError naming the first missing piece."""
    has_voc, has_sbd = (root / VOC).is_dir(), (root / SBD).is_dir()
    if not has_voc and not has_sbd:
        raise UserError(
            f"'{root / VOC}' not found; pass --root the folder that holds VOCdevkit/ (VainF's --data_root) or "
            f"VOCaug/ (PIR-AT's)"
        )
    texts = plan_voc(root) if has_voc else {}
    notes: list[Note] = []
    if not has_voc:
        notes.append((logging.INFO, f"no {VOC} in {root}: only SBD's list is written"))
    elif "train_aug" not in texts:
        notes.append(
            (logging.INFO, f"no train_aug.txt in {root} or ImageSets/Segmentation: list/train_aug.txt not written")
        )
    sbd = plan_sbd(root, keep_val_overlap, overwrite) if has_sbd else None
    if sbd is None:
        notes.append((logging.INFO, f"no {SBD} in {root}: list/{SBD_SPLIT}.txt not written"))
    else:
        texts[SBD_SPLIT] = sbd.text
        notes.append(sbd.note)
    return texts, sbd, notes


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename it, so no half-written file is left behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot write '{path}' ({err}); check that '{path.parent}' is writable") from err


def write_lists(root: str | Path, overwrite: bool = False, keep_val_overlap: bool = False) -> dict[str, Path]:
    """Write ``list/<split>.txt`` (and SBD's class-map PNGs) under ``root``; refuses to change an existing list
    unless ``overwrite``, which also rewrites existing PNGs. ``keep_val_overlap`` keeps VOC 2012 val images in
    ``list/sbd_trainval.txt``."""
    root = Path(root)
    texts, sbd, notes = plan_lists(root, keep_val_overlap, overwrite)
    out = {split: root / "list" / f"{split}.txt" for split in texts}
    changed = [p for split, p in out.items() if p.exists() and p.read_text() != texts[split]]
    if changed and not overwrite:
        raise UserError(f"'{changed[0]}' exists with other content; pass --overwrite to replace it")
    for folder in (root / "list", root / SBD_PNG):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"'{folder}' is a file, not a folder; move it so the outputs can be written there")
    for level, message in notes:
        logger.log(level, "%s", message)
    if sbd is not None:
        (root / SBD_PNG).mkdir(exist_ok=True)
        for path, data in sbd.pngs.items():
            _write_atomic(path, data)
        hint = " (pass --overwrite to regenerate them)" if sbd.kept else ""
        logger.info("wrote %d class maps to %s, kept %d existing%s", len(sbd.pngs), SBD_PNG, sbd.kept, hint)
    (root / "list").mkdir(exist_ok=True)
    for split, path in out.items():
        _write_atomic(path, texts[split].encode())
        logger.info("%s: %d images", path, texts[split].count("\n"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m tool_data.voc",
        description="Write list files for a VainF/SAM-AT VOC 2012 folder and for SBD (VOCaug/dataset) as PIR-AT uses.",
    )
    parser.add_argument("--root", required=True, help="the folder holding VOCdevkit/ (VainF's --data_root) and VOCaug/")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace list files whose content differs and rewrite SBD's PNGs"
    )
    parser.add_argument(
        "--keep-val-overlap",
        action="store_true",
        help="keep the VOC 2012 val images in list/sbd_trainval.txt (PIR-AT's list exactly; VOC val is then seen)",
    )
    args = parser.parse_args(argv)
    for split, path in write_lists(args.root, args.overwrite, args.keep_val_overlap).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(main)
