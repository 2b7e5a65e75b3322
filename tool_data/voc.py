"""List files for a PASCAL VOC 2012 folder laid out as VainF's / SAM-AT's code expects it.

    python -m tool_data.voc --root datasets/data [--overwrite]

``--root`` holds ``VOCdevkit/VOC2012/`` (``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``) and,
for the augmented training set (VainF's ``year 2012_aug``), ``VOCdevkit/VOC2012/SegmentationClassAug`` with
``train_aug.txt`` in ``--root`` (where SAM-AT places it) or in ``ImageSets/Segmentation``. It writes, relative to
``--root`` (the config's ``data_root``): ``list/train.txt`` and ``list/val.txt`` (``SegmentationClass`` masks)
and, when the augmented set is there, ``list/train_aug.txt`` (``SegmentationClassAug`` masks) - the same image
and mask pairs VainF's ``VOCSegmentation`` reads. Every listed file is checked first: on an error nothing is
written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from util.errors import ArgumentParser, UserError, run_main

logger = logging.getLogger(__name__)

VOC = Path("VOCdevkit/VOC2012")
SPLITS = {"train": "SegmentationClass", "val": "SegmentationClass", "train_aug": "SegmentationClassAug"}


def _ids(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return [line for line in lines if line]


def _split_file(root: Path, split: str) -> Path | None:
    """Where the split's id list is: ImageSets/Segmentation, or train_aug.txt in the root as SAM-AT has it."""
    candidates = [root / VOC / "ImageSets/Segmentation" / f"{split}.txt"]
    if split == "train_aug":
        candidates.insert(0, root / "train_aug.txt")
    return next((p for p in candidates if p.is_file()), None)


def plan_lists(root: Path) -> dict[str, str]:
    """The text of each list file to write; UserError naming the first missing piece."""
    if not (root / VOC).is_dir():
        raise UserError(f"'{root / VOC}' not found; pass --root the folder that holds VOCdevkit/ (VainF's --data_root)")
    texts = {}
    for split, masks in SPLITS.items():
        source = _split_file(root, split)
        if source is None:
            if split == "train_aug":
                logger.info("no train_aug.txt in %s or ImageSets/Segmentation: list/train_aug.txt not written", root)
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


def write_lists(root: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``list/<split>.txt`` under ``root``; refuses to change an existing list unless ``overwrite``."""
    root = Path(root)
    texts = plan_lists(root)
    out = {split: root / "list" / f"{split}.txt" for split in texts}
    changed = [p for split, p in out.items() if p.exists() and p.read_text() != texts[split]]
    if changed and not overwrite:
        raise UserError(f"'{changed[0]}' exists with other content; pass --overwrite to replace it")
    (root / "list").mkdir(exist_ok=True)
    for split, path in out.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(texts[split])
        os.replace(tmp, path)
        logger.info("%s: %d images", path, texts[split].count("\n"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m tool_data.voc", description="Write list files for a VainF/SAM-AT VOC 2012 folder."
    )
    parser.add_argument("--root", required=True, help="the folder holding VOCdevkit/ (VainF's --data_root)")
    parser.add_argument("--overwrite", action="store_true", help="replace list files whose content differs")
    args = parser.parse_args(argv)
    for split, path in write_lists(args.root, args.overwrite).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(main)
