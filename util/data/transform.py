"""Paired image/label transforms with the semseg API (``util/data/transform.py`` of hszhao/semseg).

Every transform is called as ``image, label = t(image, label)``. Before :class:`ToTensor` the image
is an HxWx3 float32 RGB array in 0..255 and the label an HxW uint8 array of class indices; after it
they are a float CxHxW tensor and a long HxW tensor.

Two rules hold for every geometric transform: image and label get the same geometry, so they stay
aligned, and labels are only ever resampled with nearest-neighbour interpolation or filled with
``ignore_label``, so a label never gains a value it did not have. Randomness comes from Python's
``random`` module, which the data loader seeds per worker.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from util.errors import UserError

# (image, label): numpy arrays before ToTensor, tensors after it.
Pair = tuple[Any, Any]

# cv2.INTER_NEAREST maps output pixels to input pixels without the half-pixel centre offset that
# INTER_LINEAR uses, so at some scales the label edge lands one pixel away from the image edge.
# INTER_NEAREST_EXACT uses the same pixel-centre convention as INTER_LINEAR (and PIL).
_LABEL_RESIZE = cv2.INTER_NEAREST_EXACT


def _is_number(value: object) -> bool:
    """True for real numbers (int/float/numpy scalars), false for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number_pair(value: object, name: str, positive: bool) -> tuple[float, float]:
    """Validate a ``(min, max)`` pair of numbers with ``min <= max``."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
    ):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name} must satisfy min <= max, got {value!r}")
    if positive and low <= 0:
        raise ValueError(f"{name} values must be > 0, got {value!r}")
    return low, high


def _padding(value: object, name: str) -> list[float]:
    """Validate a per-channel fill value: a list of 3 numbers (the mean colour, 0..255)."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 3
        or not all(_is_number(v) for v in value)
    ):
        raise ValueError(f"{name} must be a list of 3 numbers (the mean colour), got {value!r}")
    return [float(v) for v in value]


def _ignore_label(value: object) -> int:
    """Validate ``ignore_label``: labels are uint8, so it must fit in 0..255."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ValueError(f"ignore_label must be an integer in 0..255, got {value!r}")
    return int(value)


def _probability(value: object) -> float:
    """Validate a probability in [0, 1]."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {value!r}")
    return float(value)


def _keep_channels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Restore a trailing channel axis of size 1 that some cv2 functions drop."""
    if before.ndim == 3 and after.ndim == 2:
        return after[:, :, np.newaxis]
    return after


def _check_pair(image: np.ndarray, label: np.ndarray, name: str) -> None:
    """Raise if image and label are not numpy arrays of the same height and width."""
    if not isinstance(image, np.ndarray) or not isinstance(label, np.ndarray):
        raise TypeError(
            f"{name} expects numpy arrays, got {type(image).__name__} and "
            f"{type(label).__name__}; put it before ToTensor"
        )
    if label.ndim != 2 or image.ndim not in (2, 3) or image.shape[:2] != label.shape:
        raise ValueError(
            f"{name}: image {image.shape} and label {label.shape} must be HxW(xC) "
            f"and HxW with the same height and width"
        )


class Compose:
    """Apply a list of paired transforms in order."""

    def __init__(self, segtransform: list[Callable]) -> None:
        """Store the transforms.

        Args:
            segtransform: transforms, each called as ``image, label = t(image, label)``.
        """
        if not isinstance(segtransform, (list, tuple)) or not all(callable(t) for t in segtransform):
            raise ValueError("Compose expects a list of callable transforms")
        self.segtransform = list(segtransform)

    def __call__(self, image, label) -> Pair:
        for t in self.segtransform:
            image, label = t(image, label)
        return image, label

    def __repr__(self) -> str:
        inner = ", ".join(type(t).__name__ for t in self.segtransform)
        return f"Compose([{inner}])"


class ToTensor:
    """Convert an HxWxC (or HxW) array to a float CxHxW tensor and the label to a long HxW one."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(image, np.ndarray) or not isinstance(label, np.ndarray):
            raise TypeError("ToTensor expects numpy arrays (as read by util.data.dataset)")
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        if image.ndim != 3:
            raise ValueError(f"ToTensor expects an HxWxC or HxW image, got shape {image.shape}")
        if label.ndim != 2:
            raise ValueError(f"ToTensor expects an HxW label, got shape {label.shape}")
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose((2, 0, 1)))).float()
        label_t = torch.from_numpy(np.ascontiguousarray(label)).long()
        return image_t, label_t


class Normalize:
    """Per-channel ``(x - mean) / std`` on a CxHxW tensor; the label passes through.

    ``mean`` and ``std`` are in the image's 0..255 units, as in semseg
    (``mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]``). Without ``std`` only the mean is
    subtracted.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float] | None = None) -> None:
        if not isinstance(mean, Sequence) or len(mean) == 0 or not all(_is_number(m) for m in mean):
            raise ValueError(f"Normalize mean must be a non-empty list of numbers, got {mean!r}")
        if std is not None and (
            not isinstance(std, Sequence) or len(std) != len(mean) or not all(_is_number(s) and s > 0 for s in std)
        ):
            raise ValueError(f"Normalize std must be {len(mean)} positive numbers, got {std!r}")
        self.mean = [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def __call__(self, image: torch.Tensor, label) -> Pair:
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise TypeError("Normalize expects a CxHxW tensor; put it after ToTensor")
        if image.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channel means but the image has {image.shape[0]} channels"
            )
        mean = torch.tensor(self.mean, dtype=image.dtype).view(-1, 1, 1)
        image = image - mean
        if self.std is not None:
            image = image / torch.tensor(self.std, dtype=image.dtype).view(-1, 1, 1)
        return image, label


class Resize:
    """Resize to a fixed ``(h, w)``: image bilinear, label nearest."""

    def __init__(self, size: Sequence[int]) -> None:
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and s > 0 for s in size)
        ):
            raise ValueError(f"Resize size must be a positive (h, w) pair of ints, got {size!r}")
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "Resize")
        dsize = (self.size[1], self.size[0])  # cv2 wants (w, h)
        out = cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, dsize, interpolation=_LABEL_RESIZE)
        return _keep_channels(image, out), label


class RandScale:
    """Rescale by a random factor from ``scale``, optionally with a random aspect ratio.

    With ``aspect_ratio = (a, b)`` a ratio r is drawn from it and x/y are scaled by
    ``s * sqrt(r)`` and ``s / sqrt(r)``, as in semseg.
    """

    def __init__(self, scale: Sequence[float], aspect_ratio: Sequence[float] | None = None) -> None:
        self.scale = _number_pair(scale, "RandScale scale", positive=True)
        self.aspect_ratio = (
            None if aspect_ratio is None else _number_pair(aspect_ratio, "RandScale aspect_ratio", positive=True)
        )

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "RandScale")
        temp_scale = self.scale[0] + (self.scale[1] - self.scale[0]) * random.random()
        temp_aspect_ratio = 1.0
        if self.aspect_ratio is not None:
            low, high = self.aspect_ratio
            temp_aspect_ratio = math.sqrt(low + (high - low) * random.random())
        fx = temp_scale * temp_aspect_ratio
        fy = temp_scale / temp_aspect_ratio
        h, w = label.shape
        # Compute the size once and pass it to both calls so image and label always match.
        dsize = (max(1, round(w * fx)), max(1, round(h * fy)))
        out = cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, dsize, interpolation=_LABEL_RESIZE)
        return _keep_channels(image, out), label


class Crop:
    """Crop to ``size``, padding first when the input is smaller.

    Padding is split half/half (top/left get ``int(pad / 2)``) as in semseg; the image is filled
    with ``padding`` (the mean colour, so it normalises to ~0) and the label with ``ignore_label``
    (so padded pixels never count in the loss).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        crop_type: str = "center",
        padding: Sequence[float] | None = None,
        ignore_label: int = 255,
    ) -> None:
        """Validate the crop settings.

        Args:
            size: crop size, an int for a square or ``(h, w)``.
            crop_type: ``'center'`` or ``'rand'``.
            padding: image fill value per channel (0..255), needed only when padding happens.
            ignore_label: label fill value.
        """
        if isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0:
            self.crop_h = self.crop_w = int(size)
        elif (
            isinstance(size, Sequence)
            and len(size) == 2
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size)
        ):
            self.crop_h, self.crop_w = int(size[0]), int(size[1])
        else:
            raise ValueError(f"Crop size must be a positive int or (h, w) pair, got {size!r}")
        if crop_type not in ("center", "rand"):
            raise ValueError(f"Crop crop_type must be 'center' or 'rand', got {crop_type!r}")
        self.crop_type = crop_type
        self.padding = None if padding is None else _padding(padding, "Crop padding")
        self.ignore_label = _ignore_label(ignore_label)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "Crop")
        h, w = label.shape
        pad_h = max(self.crop_h - h, 0)
        pad_w = max(self.crop_w - w, 0)
        pad_h_half = int(pad_h / 2)
        pad_w_half = int(pad_w / 2)
        if pad_h > 0 or pad_w > 0:
            if self.padding is None:
                raise ValueError(
                    f"Crop to {self.crop_h}x{self.crop_w} needs padding for a "
                    f"{h}x{w} input but padding is None; pass the mean colour"
                )
            borders = (pad_h_half, pad_h - pad_h_half, pad_w_half, pad_w - pad_w_half)
            out = cv2.copyMakeBorder(image, *borders, cv2.BORDER_CONSTANT, value=self.padding)
            image = _keep_channels(image, out)
            label = cv2.copyMakeBorder(label, *borders, cv2.BORDER_CONSTANT, value=self.ignore_label)
        h, w = label.shape
        if self.crop_type == "rand":
            h_off = random.randint(0, h - self.crop_h)
            w_off = random.randint(0, w - self.crop_w)
        else:
            h_off = int((h - self.crop_h) / 2)
            w_off = int((w - self.crop_w) / 2)
        image = image[h_off : h_off + self.crop_h, w_off : w_off + self.crop_w]
        label = label[h_off : h_off + self.crop_h, w_off : w_off + self.crop_w]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


class RandRotate:
    """With probability ``p``, rotate about the centre by a random angle from ``rotate`` (degrees).

    Uncovered corners are filled with ``padding`` in the image and ``ignore_label`` in the label.
    """

    def __init__(
        self,
        rotate: Sequence[float],
        padding: Sequence[float],
        ignore_label: int = 255,
        p: float = 0.5,
    ) -> None:
        self.rotate = _number_pair(rotate, "RandRotate rotate", positive=False)
        self.padding = _padding(padding, "RandRotate padding")
        self.ignore_label = _ignore_label(ignore_label)
        self.p = _probability(p)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "RandRotate")
        if random.random() < self.p:
            angle = self.rotate[0] + (self.rotate[1] - self.rotate[0]) * random.random()
            h, w = label.shape
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
            out = cv2.warpAffine(
                image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=self.padding
            )
            image = _keep_channels(image, out)
            label = cv2.warpAffine(
                label,
                matrix,
                (w, h),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=self.ignore_label,
            )
        return image, label


class _RandomFlip:
    """Flip image and label together with probability ``p`` (``axis`` is cv2's flip code)."""

    axis = 1

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability(p)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, type(self).__name__)
        if random.random() < self.p:
            image = _keep_channels(image, cv2.flip(image, self.axis))
            label = cv2.flip(label, self.axis)
        return image, label


class RandomHorizontalFlip(_RandomFlip):
    """Flip left-right with probability ``p``."""

    axis = 1


class RandomVerticalFlip(_RandomFlip):
    """Flip upside-down with probability ``p``."""

    axis = 0


class VainFRandomScale:
    """VainF's ``ExtRandomScale``: s = random.uniform(low, high); PIL bilinear (image) and nearest (label) resizing
    to height int(W * s) and width int(H * s). VainF hands torchvision PIL's (W, H) order where it expects
    (h, w), so a non-square image's aspect ratio is swapped; kept, so that a run sees the crops SAM-AT's saw.
    The image is taken as 8-bit (as VainF's PIL images are): use it first in the pipeline."""

    def __init__(self, scale: Sequence[float]) -> None:
        self.scale = _number_pair(scale, "VainFRandomScale scale", positive=True)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        from PIL import Image

        _check_pair(image, label, "VainFRandomScale")
        s = random.uniform(*self.scale)
        h, w = label.shape
        size = (int(h * s), int(w * s))  # PIL's (width, height)
        pixels = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).resize(size, Image.BILINEAR)
        label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
        return np.asarray(pixels, dtype=np.float32), label


class VainFRandomCrop:
    """VainF's ``ExtRandomCrop(size, pad_if_needed=True)``: when the width is short, every side padded by
    int((1 + crop_w - w) / 2), then likewise for the height; image and label both filled with 0 (black, and
    class 0 for the label, as torchvision's pad does for VainF); then a random crop (random.randint per axis)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.crop_h, self.crop_w = (size, size) if _is_number(size) else (int(size[0]), int(size[1]))

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "VainFRandomCrop")
        for short, target in ((1, self.crop_w), (0, self.crop_h)):
            if label.shape[short] < target:
                pad = int((1 + target - label.shape[short]) / 2)
                image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
                label = np.pad(label, pad)
        h, w = label.shape
        top = left = 0
        if (h, w) != (self.crop_h, self.crop_w):
            top, left = random.randint(0, h - self.crop_h), random.randint(0, w - self.crop_w)
        return (
            image[top : top + self.crop_h, left : left + self.crop_w],
            label[top : top + self.crop_h, left : left + self.crop_w],
        )


def _short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """PIL's (width, height) of an h x w image with its short side resized to ``short``, the long side
    int(long * short / short side), as PIR-AT's transforms round it."""
    return (int(w * short / h), short) if w > h else (short, int(h * short / w))


class PIRATRandomScaleCrop:
    """PIR-AT's training transform (``_sync_transform`` of nmndeep/Robust-Segmentation), with Python's ``random``
    in its order: a horizontal flip with probability 0.5; the short side resized to randint(int(base * low),
    int(base * high)) with PIL (image bilinear, label nearest; the long side int(long * short' / short)); when
    shorter than the crop, padded at the bottom and right with 0 in the image and in the label (class 0, as the
    reference fills it); with probability 0.5 a PIL Gaussian blur of radius random(); a random crop_h x crop_w
    crop. The image is taken as 8-bit, as the reference's PIL images are: use it first in the pipeline."""

    def __init__(self, base_size: int, size: int | Sequence[int], scale: Sequence[float] = (0.5, 2.0)) -> None:
        self.base_size = int(base_size)
        self.crop_h, self.crop_w = (size, size) if _is_number(size) else (int(size[0]), int(size[1]))
        self.scale = _number_pair(scale, "PIRATRandomScaleCrop scale", positive=True)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        from PIL import Image, ImageFilter

        _check_pair(image, label, "PIRATRandomScaleCrop")
        pixels = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
        mask = Image.fromarray(label)
        if random.random() < 0.5:
            pixels, mask = pixels.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        short = random.randint(int(self.base_size * self.scale[0]), int(self.base_size * self.scale[1]))
        w, h = pixels.size
        size = _short_side_size(h, w, short)
        pixels, mask = pixels.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        array, label = np.asarray(pixels), np.asarray(mask)
        pad_h, pad_w = max(self.crop_h - size[1], 0), max(self.crop_w - size[0], 0)
        if pad_h or pad_w:
            array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)))
        if random.random() < 0.5:
            array = np.asarray(Image.fromarray(array).filter(ImageFilter.GaussianBlur(radius=random.random())))
        h, w = label.shape
        left, top = random.randint(0, w - self.crop_w), random.randint(0, h - self.crop_h)
        window = (slice(top, top + self.crop_h), slice(left, left + self.crop_w))
        return array[window].astype(np.float32), np.ascontiguousarray(label[window])


class ShortSideCenterCrop:
    """PIR-AT's validation transform (``_val_sync_transform`` of nmndeep/Robust-Segmentation): the short side
    resized to the crop's shorter side with PIL (image bilinear, label nearest; the long side int(long * short'
    / short)), then one crop_h x crop_w centre crop at round((side - crop) / 2), Python's round (half to even).
    The image is taken as 8-bit, as the reference's PIL images are."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.crop_h, self.crop_w = (size, size) if _is_number(size) else (int(size[0]), int(size[1]))

    def __call__(self, image: np.ndarray, label: np.ndarray, name: str = "image") -> Pair:
        from PIL import Image

        _check_pair(image, label, "ShortSideCenterCrop")
        size = self.resized(*label.shape, name)
        pixels = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).resize(size, Image.BILINEAR)
        return self._crop(np.asarray(pixels, dtype=np.float32)), self.label(label, name)

    def label(self, label: np.ndarray, name: str = "label") -> np.ndarray:
        """The label alone, as :meth:`__call__` gives it (nearest)."""
        from PIL import Image

        return self._crop(np.asarray(Image.fromarray(label).resize(self.resized(*label.shape, name), Image.NEAREST)))

    def _crop(self, array: np.ndarray) -> np.ndarray:
        h, w = array.shape[:2]
        top, left = round((h - self.crop_h) / 2.0), round((w - self.crop_w) / 2.0)  # half to even
        return array[top : top + self.crop_h, left : left + self.crop_w]

    def resized(self, h: int, w: int, name: str = "image") -> tuple[int, int]:
        """PIL's (width, height) of an h x w image with its short side resized.

        Raises:
            UserError: the resized image is smaller than the crop (only a non-square crop can be).
        """
        short = min(self.crop_h, self.crop_w)
        size = _short_side_size(h, w, short)
        if size[0] < self.crop_w or size[1] < self.crop_h:
            raise UserError(
                f"{name} is {h}x{w}, {size[1]}x{size[0]} with its short side resized to {short}: smaller than the "
                f"crop {self.crop_h}x{self.crop_w} (HxW); use a square crop (test_h = test_w) or leave the image out"
            )
        return size


class RandomGaussianBlur:
    """With probability 0.5, blur the image (not the label) with a ``radius x radius`` kernel."""

    def __init__(self, radius: int = 5) -> None:
        if not isinstance(radius, numbers.Integral) or isinstance(radius, bool) or radius <= 0 or radius % 2 == 0:
            raise ValueError(f"RandomGaussianBlur radius must be a positive odd int, got {radius!r}")
        self.radius = int(radius)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "RandomGaussianBlur")
        if random.random() < 0.5:
            out = cv2.GaussianBlur(image, (self.radius, self.radius), 0)
            image = _keep_channels(image, out)
        return image, label


class RGB2BGR:
    """Swap RGB to BGR channel order (for Caffe-style pretrained weights)."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "RGB2BGR")
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR), label


class BGR2RGB:
    """Swap BGR to RGB channel order."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        _check_pair(image, label, "BGR2RGB")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label
