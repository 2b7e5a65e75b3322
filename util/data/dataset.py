"""List-file datasets with the semseg layout (``util/data/dataset.py`` of hszhao/semseg).

A list file holds one ``image_rel label_rel`` pair per line, relative to ``data_root`` (test lists
may give only the image). Everything that can be checked before training starts is checked when
the list is read (every file exists) and, before a run writes anything, by
:meth:`SemData.check_samples` (readable images and class-index labels, matching sizes, label values
in range; a loaded sample is checked again), and reported as a one-line
:class:`~util.errors.UserError` that names the file.

Labels are read with PIL rather than ``cv2.imread(..., IMREAD_GRAYSCALE)``: VOC
``SegmentationClass`` PNGs are palette images whose pixel values are the class indices, and cv2
would return the palette colours' luminance instead.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch.utils.data
from PIL import Image

from util.config import IMAGENET_MEAN, IMAGENET_STD
from util.data.transform import ShortSideCenterCrop
from util.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PREPROCESS = ("none", "pirat")  # what SemData does to a sample before any transform (config key test_preprocess)


def mean_std_255(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tuple[list[float], list[float]]:
    """A normalisation (default ImageNet's, config keys ``mean``/``std`` in [0, 1] units) in 0..255 pixel units, as
    semseg's Normalize and padding expect."""
    return [m * 255 for m in mean], [s * 255 for s in std]


def _read_lines(path: str, what: str, hint: str) -> list[str]:
    """Read a text file's lines, turning every I/O or decoding problem into a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{what} '{path}' not found; {hint}")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first path
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what} '{path}' ({err}); {hint}") from err


def _split_with_spaces(line: str, data_root: str) -> list[str] | None:
    """[image, label] of a list line whose paths hold spaces: the only split at a run of blanks where both sides
    name existing files; None when there is no such split, or more than one."""
    gaps = [m.span() for m in re.finditer(r"\s+", line.strip())]
    text = line.strip()
    found = [
        [text[:start], text[end:]]
        for start, end in gaps
        if all(os.path.isfile(os.path.join(data_root, part)) for part in (text[:start], text[end:]))
    ]
    return found[0] if len(found) == 1 else None


def make_dataset(split: str, data_root: str, data_list: str) -> list[tuple[str, str | None]]:
    """Parse a list file into ``(image_path, label_path)`` pairs and check that the files exist.

    Args:
        split: ``'train'``, ``'val'`` or ``'test'``; only test lines may omit the label.
        data_root: directory the relative paths in the list are joined to.
        data_list: path of the list file.

    Returns:
        One ``(image_path, label_path)`` per non-blank line; ``label_path`` is None for test lines
        without a label.

    Raises:
        UserError: the list or data_root is missing, a line is malformed, or a listed file is
            missing (all checked here so the problem shows before training starts).
    """
    lines = _list_lines(split, data_root, data_list)
    items: list[tuple[str, str | None]] = []
    missing: list[tuple[int, str, str]] = []
    for line_no, line in enumerate(lines, start=1):
        fields = _list_fields(line, line_no, split, data_root, data_list)
        if not fields:
            continue
        image_path = os.path.join(data_root, fields[0])
        label_path = os.path.join(data_root, fields[1]) if len(fields) == 2 else None
        for kind, path in (("image", image_path), ("label", label_path)):
            if path is not None and not os.path.isfile(path):
                missing.append((line_no, kind, path))
        items.append((image_path, label_path))
    if missing:
        line_no, kind, path = missing[0]
        more = f" ({len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        raise UserError(
            f"list file '{data_list}' line {line_no}: {kind} '{path}' not found"
            f"{more}; check data_root '{data_root}' and the list"
        )
    if not items:
        raise UserError(f"list file '{data_list}' has no entries; check train_list/val_list/test_list in the config")
    logger.info("%d samples in the %s set (%s)", len(items), split, data_list)
    return items


def _list_lines(split: str, data_root: str, data_list: str) -> list[str]:
    """The lines of a list file, once the split, the list and data_root are known to be there."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    hint = "check train_list/val_list/test_list in the config"
    if not data_list:
        raise UserError(f"no list file given for the {split} split; {hint}")
    lines = _read_lines(data_list, "list file", hint)
    if not data_root:
        raise UserError(f"data_root is not set (needed by list file '{data_list}'); set data_root in the config")
    if not os.path.isdir(data_root):
        raise UserError(
            f"data_root '{data_root}' not found (used by list file '{data_list}'); check data_root in the config"
        )
    return lines


def _list_fields(line: str, line_no: int, split: str, data_root: str, data_list: str) -> list[str]:
    """A list line's one or two relative paths ([] for a blank line)."""
    fields = line.split()
    if len(fields) > 2:  # paths with spaces: the one split at which both files exist
        fields = _split_with_spaces(line, data_root) or fields
    if len(fields) > 2 or (len(fields) == 1 and split != "test"):
        expected = "'image_path' or 'image_path label_path'" if split == "test" else "'image_path label_path'"
        raise UserError(
            f"list file '{data_list}' line {line_no}: expected {expected} "
            f"separated by a space, got {len(fields)} field(s): {line.strip()!r}"
        )
    return fields


def read_image(path: str, decoder: str = "cv2") -> np.ndarray:
    """Read an image as an HxWx3 float32 RGB array in 0..255, decoded by cv2 (semseg's way) or PIL (VainF's and
    PIR-AT's way: JPEG decoders may differ by a grey level here and there).

    Raises:
        UserError: the file is missing or cannot be decoded as an image.
    """
    if not os.path.isfile(path):
        raise UserError(f"image '{path}' not found; check data_root and the list file")
    if decoder == "pil":
        try:
            with Image.open(path) as pil_image:
                return np.asarray(pil_image.convert("RGB"), dtype=np.float32)
        except (OSError, SyntaxError, ValueError):
            image = None
    else:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(
            f"image '{path}' cannot be decoded (corrupt or not an image file); replace it or remove it from the list"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32)


def read_label(path: str) -> np.ndarray:
    """Read a label map as an HxW uint8 array of class indices.

    Palette ('P') PNGs such as VOC ``SegmentationClass`` store indices as pixel values, so the raw
    indices are taken, never the colours. Grayscale and 16-bit maps are taken as they are; an
    RGB(A) image is accepted only when its three channels are equal.

    Raises:
        UserError: the file is missing, corrupt, a colour image, or holds values above 255.
    """
    if not os.path.isfile(path):
        raise UserError(f"label '{path}' not found; check data_root and the list file")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.array(img)
    except (OSError, SyntaxError, ValueError) as err:
        # PIL raises UnidentifiedImageError (an OSError) for non-images and OSError/SyntaxError/
        # ValueError for truncated or malformed files.
        raise UserError(
            f"label '{path}' cannot be decoded (corrupt or not an image file: "
            f"{err}); replace it or remove it from the list"
        ) from err

    if mode in ("P", "L", "1"):
        return np.ascontiguousarray(array, dtype=np.uint8)
    if mode == "LA":
        return np.ascontiguousarray(array[:, :, 0], dtype=np.uint8)
    if mode == "I" or mode.startswith("I;16"):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(
                f"label '{path}' holds values {int(array.min())}..{int(array.max())}; "
                "class indices must fit in 0..255 (uint8)"
            )
        return array.astype(np.uint8)
    if mode in ("RGB", "RGBA"):
        rgb = array[:, :, :3]
        red = rgb[:, :, 0]
        if np.array_equal(red, rgb[:, :, 1]) and np.array_equal(red, rgb[:, :, 2]):
            return np.ascontiguousarray(red)
        raise UserError(
            f"label '{path}' is a color ({mode}) image, not a class-index map; "
            "use single-channel or palette PNGs of class indices (e.g. VOC "
            "SegmentationClass/SegmentationClassAug, Cityscapes *_labelTrainIds.png)"
        )
    raise UserError(
        f"label '{path}' has unsupported image mode '{mode}'; use single-channel or palette PNGs of class indices"
    )


def rescale_normalized(image: np.ndarray) -> np.ndarray:
    """SAM-AT's input: the image normalised with the ImageNet mean and std, then rescaled to [0, 1] by its own
    minimum and maximum (its VOC loader does this; its models then normalise once more), returned in 0..255 so
    that the rest of the pipeline, attacks included, treats it as the image."""
    mean, std = (np.array(v, dtype=np.float64) for v in mean_std_255())
    normalized = (image - mean) / std
    low, high = normalized.min(), normalized.max()
    return np.float32(255.0 * (normalized - low) / max(high - low, 1e-12))


def test_data(cfg) -> SemData:
    """The config's ``test_list`` as test.py, the visualiser and the benches read it (TEST keys applied)."""
    return SemData(
        cfg.split,
        cfg.data_root,
        cfg.test_list,
        None,
        cfg.classes,
        cfg.ignore_label,
        cfg.rescale_normalized_input,
        cfg.test_preprocess,
        (cfg.test_h, cfg.test_w),
    )


class SemData(torch.utils.data.Dataset):
    """Image/label pairs from a list file, loaded and checked lazily (all at once: :meth:`check_samples`), then
    transformed.

    Returns ``(image, label)`` as produced by ``transform`` (numpy arrays when it is None). A
    test-split item without a label gets an all-``ignore_label`` label of the image's size.
    """

    def __init__(
        self,
        split: str = "train",
        data_root: str | None = None,
        data_list: str | None = None,
        transform: Callable | None = None,
        classes: int | None = None,
        ignore_label: int = 255,
        rescale_normalized: bool = False,
        preprocess: str = "none",
        crop: tuple[int, int] | None = None,
    ) -> None:
        """Read the list (checking that every file exists).

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.
            data_root: directory the list's relative paths are joined to.
            data_list: list file path.
            transform: paired transform, e.g. a :class:`util.data.transform.Compose`.
            classes: number of classes; when given, label values are checked against it.
            ignore_label: label value excluded from the loss and metrics (0..255).
            rescale_normalized: feed :func:`rescale_normalized` images (SAM-AT's input).
            preprocess: ``none``, or ``pirat``: each image decoded by PIL and given as PIR-AT's validation
                transform makes it (:class:`~util.data.transform.ShortSideCenterCrop` to ``crop``), its label too.
            crop: (h, w) of ``pirat``'s centre crop.
        """
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        if not isinstance(ignore_label, int) or not 0 <= ignore_label <= 255:
            raise ValueError(f"ignore_label must be an int in 0..255, got {ignore_label!r}")
        if classes is not None and (not isinstance(classes, int) or not 0 < classes <= 256):
            raise ValueError(f"classes must be an int in 1..256, got {classes!r}")
        self.split = split
        self.data_list = make_dataset(split, data_root, data_list)
        self.transform = transform
        self.classes = classes
        self.ignore_label = ignore_label
        self.rescale_normalized = rescale_normalized
        self.preprocess = ShortSideCenterCrop(crop) if preprocess == "pirat" else None

    def __len__(self) -> int:
        return len(self.data_list)

    def __getitem__(self, index: int):
        image, label = self.sample(index)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The checked, untransformed ``(image, label)`` of item ``index``: HxWx3 float32 RGB, HxW uint8."""
        image_path, label_path = self.data_list[index]
        image = read_image(image_path, "cv2" if self.preprocess is None else "pil")
        if label_path is None:
            label = np.full(image.shape[:2], self.ignore_label, dtype=np.uint8)
        else:
            label = read_label(label_path)
            if image.shape[:2] != label.shape:
                raise UserError(
                    f"image '{image_path}' is {image.shape[0]}x{image.shape[1]} but "
                    f"label '{label_path}' is {label.shape[0]}x{label.shape[1]} "
                    "(HxW); they must have the same size"
                )
            self._check_values(label, label_path)
        if self.preprocess is not None:
            image, label = self.preprocess(image, label, f"image '{image_path}'")
        if self.rescale_normalized:
            image = rescale_normalized(image)
        return image, label

    def read_label(self, path: str) -> np.ndarray:
        """The label file at ``path`` as :meth:`sample` gives it (``preprocess`` applied)."""
        label = read_label(path)
        return label if self.preprocess is None else self.preprocess.label(label, f"label '{path}'")

    def check_samples(self) -> None:
        """Check every item before a run writes anything (not when an epoch reaches it): each image's header
        and each label in full (readable, the size of its image, values in range), a few at a time.

        Raises:
            UserError: the first broken item in list order, named as :meth:`sample` names it.
        """
        start = time.perf_counter()
        for _ in self._each_item(self._check_sample):
            pass
        logger.info("checked %d images and labels in %.1f s", len(self), time.perf_counter() - start)

    def class_pixel_counts(self) -> np.ndarray:
        """Labelled pixels per class (classes,) over every label of the list (ignore_label not counted), read a
        few at a time: the dataset statistics that class-balanced losses weight by.

        Raises:
            UserError: a label that cannot be read or holds a value out of range, named as :meth:`sample` does.
        """
        if self.classes is None:
            raise ValueError("class_pixel_counts needs the number of classes")

        def count(index: int) -> np.ndarray:
            label_path = self.data_list[index][1]
            if label_path is None:
                return np.zeros(self.classes, dtype=np.int64)
            return self._check_values(read_label(label_path), label_path)[: self.classes].astype(np.int64)

        return sum(self._each_item(count), np.zeros(self.classes, dtype=np.int64))

    def _each_item(self, fn: Callable[[int], Any]) -> Iterator[Any]:
        """``fn`` of every item index, a few at a time (PIL decodes without the GIL), results in list order."""
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            yield from pool.map(fn, range(len(self)))

    def _check_sample(self, index: int) -> None:
        image_path, label_path = self.data_list[index]
        try:
            with Image.open(image_path) as img:
                height_width = img.size[::-1]
        except (OSError, SyntaxError, ValueError):
            height_width = None  # what PIL cannot open, cv2 may still decode; sample() names the problem if not
        if label_path is None or height_width is None:
            self.sample(index)
            return
        label = read_label(label_path)
        if label.shape != height_width:
            self.sample(index)  # the decoded image decides (cv2 applies a JPEG's EXIF orientation)
            return
        self._check_values(label, label_path)
        if self.preprocess is not None:
            self.preprocess.resized(*height_width, f"image '{image_path}'")

    def _check_values(self, label: np.ndarray, label_path: str) -> np.ndarray | None:
        """Raise if the label holds values outside [0, classes) and not ignore_label; else its pixels per value
        (256,), or None without classes (nothing checked)."""
        if self.classes is None:
            return None
        histogram = np.bincount(label.ravel(), minlength=256)
        present = np.flatnonzero(histogram)
        bad = [int(v) for v in present if v >= self.classes and v != self.ignore_label]
        if bad:
            shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise UserError(
                f"label '{label_path}' has values {shown} outside 0..{self.classes - 1}"
                f" (classes={self.classes}) and not ignore_label={self.ignore_label}; "
                "check classes/ignore_label in the config or convert the labels "
                "(Cityscapes: python -m tool_data.cityscapes)"
            )
        return histogram


def colorize(gray: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Turn a class-index map into a palette ('P') image for viewing.

    Args:
        gray: HxW class indices in 0..255.
        palette: (N, 3) uint8 colours; indices >= N (such as ignore 255) are drawn black.
    """
    gray = np.asarray(gray)
    palette = np.asarray(palette)
    if gray.ndim != 2:
        raise ValueError(f"colorize expects an HxW index map, got shape {gray.shape}")
    if gray.size and (gray.min() < 0 or gray.max() > 255):
        raise ValueError("colorize expects class indices in 0..255")
    if palette.ndim != 2 or palette.shape[1] != 3 or not 0 < palette.shape[0] <= 256:
        raise ValueError(f"colorize expects an (N, 3) palette with N <= 256, got {palette.shape}")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: palette.shape[0]] = palette.astype(np.uint8)
    # putpalette turns the 'L' image into a 'P' image whose indices are the pixel values.
    image = Image.fromarray(gray.astype(np.uint8))
    image.putpalette(full.ravel().tolist())
    return image


def load_names_colors(names_path: str, colors_path: str, classes: int) -> tuple[list[str], np.ndarray]:
    """Read class names (one per line) and colours (``r g b`` per line, semseg format).

    Returns:
        The names and a (classes, 3) uint8 colour array.

    Raises:
        UserError: a file is missing or malformed, or does not hold exactly ``classes`` entries.
    """
    names = [
        line.strip() for line in _read_lines(names_path, "names file", "check names_path in the config") if line.strip()
    ]
    if len(names) != classes:
        raise UserError(
            f"names file '{names_path}' has {len(names)} names but classes is "
            f"{classes}; give one name per class, one per line"
        )

    colors: list[list[int]] = []
    lines = _read_lines(colors_path, "colors file", "check colors_path in the config")
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            rgb = [int(v) for v in fields]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise UserError(
                f"colors file '{colors_path}' line {line_no}: expected 'r g b' integers in 0..255, got {line.strip()!r}"
            )
        colors.append(rgb)
    if len(colors) != classes:
        raise UserError(
            f"colors file '{colors_path}' has {len(colors)} colors but classes is "
            f"{classes}; give one 'r g b' line per class"
        )
    return names, np.array(colors, dtype=np.uint8)
