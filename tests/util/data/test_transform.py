"""Paired transforms keep image and label aligned and never invent label values.

The test image encodes its label: channel c of a pixel is ``label * 10 + c``. After any geometric
transform, wherever a pixel's neighbourhood holds a single label (so interpolation and blur cannot
mix classes), the image must still read ``label * 10 + c``; where the neighbourhood is all ignore
(padding, rotated-in corners), the image must be the padding mean.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch

from util.data import transform
from util.data.dataset import mean_std_255

MEAN, STD = mean_std_255()
IGNORE = 255
LABEL_VALUES = (0, 1, 2, 3, 4, 5)
CHANNEL_OFFSET = np.array([0.0, 1.0, 2.0], dtype=np.float32)


def make_pair(h: int = 128, w: int = 160, block: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A label of square blocks cycling through LABEL_VALUES and an image encoding it."""
    rows, cols = np.mgrid[0:h, 0:w]
    index = (rows // block) * 7 + (cols // block) * 2  # no left-right symmetry
    label = np.array(LABEL_VALUES, dtype=np.uint8)[index % len(LABEL_VALUES)]
    image = label[:, :, None].astype(np.float32) * 10 + CHANNEL_OFFSET
    return image, label


def uniform_mask(label: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose (2*margin+1)^2 neighbourhood holds a single label value.

    Pixels within ``margin`` of the frame are left out: there the neighbourhood is incomplete, and
    bilinear sampling just outside the source (rotation) blends in the fill colour while nearest
    sampling still rounds to the last row inside it.
    """
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    mask = cv2.erode(label, kernel) == cv2.dilate(label, kernel)
    mask[:margin] = mask[-margin:] = False
    mask[:, :margin] = mask[:, -margin:] = False
    return mask


def assert_aligned(image: np.ndarray, label: np.ndarray, margin: int = 3, min_fraction: float = 0.1) -> None:
    """Check label values, image/label agreement inside classes and mean colour inside ignore."""
    assert image.shape[:2] == label.shape
    assert set(np.unique(label).tolist()) <= set(LABEL_VALUES) | {IGNORE}
    uniform = uniform_mask(label, margin)
    inside = uniform & (label != IGNORE)
    assert inside.mean() >= min_fraction, "too few checkable pixels; test would be vacuous"
    expected = label[:, :, None].astype(np.float32) * 10 + CHANNEL_OFFSET
    np.testing.assert_allclose(image[inside], expected[inside], atol=1e-3)
    ignored = uniform & (label == IGNORE)
    if ignored.any():
        np.testing.assert_allclose(image[ignored], np.broadcast_to(MEAN, image[ignored].shape), atol=1e-3)


def test_to_tensor_shapes_and_dtypes():
    image, label = make_pair(8, 12)
    image_t, label_t = transform.ToTensor()(image, label)
    assert image_t.shape == (3, 8, 12) and image_t.dtype == torch.float32
    assert label_t.shape == (8, 12) and label_t.dtype == torch.int64
    np.testing.assert_array_equal(image_t.permute(1, 2, 0).numpy(), image)
    np.testing.assert_array_equal(label_t.numpy(), label)
    gray_t, _ = transform.ToTensor()(image[:, :, 0], label)
    assert gray_t.shape == (1, 8, 12)
    with pytest.raises(TypeError):
        transform.ToTensor()(torch.zeros(3, 8, 12), label)


def test_normalize_per_channel():
    image, label = make_pair(8, 12)
    image_t, label_t = transform.ToTensor()(image, label)
    out, out_label = transform.Normalize(MEAN, STD)(image_t, label_t)
    expected = (image - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert out_label is label_t
    mean_only, _ = transform.Normalize(MEAN)(image_t, label_t)
    np.testing.assert_allclose(mean_only.permute(1, 2, 0).numpy(), image - np.array(MEAN, np.float32), atol=1e-4)
    with pytest.raises(ValueError):
        transform.Normalize(MEAN[:2], STD[:2])(image_t, label_t)


def test_resize_shape_and_alignment():
    image, label = make_pair()
    out, out_label = transform.Resize((150, 70))(image, label)
    assert out.shape == (150, 70, 3) and out_label.shape == (150, 70)
    assert out.dtype == np.float32 and out_label.dtype == np.uint8
    assert_aligned(out, out_label, margin=2)


@pytest.mark.parametrize("seed", range(6))
def test_rand_scale_alignment(seed):
    random.seed(seed)
    image, label = make_pair()
    out, out_label = transform.RandScale((0.5, 2.0), aspect_ratio=(0.75, 1.33))(image, label)
    assert out.shape[:2] == out_label.shape
    assert_aligned(out, out_label, margin=2)


def test_rand_scale_fixed_factor_shape():
    image, label = make_pair()
    out, out_label = transform.RandScale((1.5, 1.5))(image, label)
    assert out.shape == (192, 240, 3) and out_label.shape == (192, 240)


@pytest.mark.parametrize("crop_type", ["center", "rand"])
def test_crop_without_padding(crop_type):
    random.seed(0)
    image, label = make_pair()
    out, out_label = transform.Crop((40, 50), crop_type=crop_type, padding=MEAN)(image, label)
    assert out.shape == (40, 50, 3) and out_label.shape == (40, 50)
    assert_aligned(out, out_label)
    if crop_type == "center":
        np.testing.assert_array_equal(out_label, label[44:84, 55:105])


def test_crop_pads_image_with_mean_and_label_with_ignore():
    image, label = make_pair(10, 20)
    out, out_label = transform.Crop((15, 25), crop_type="center", padding=MEAN)(image, label)
    assert out.shape == (15, 25, 3) and out_label.shape == (15, 25)
    # pad_h = 5 -> 2 rows on top, 3 below; pad_w = 5 -> 2 columns left, 3 right (semseg split).
    np.testing.assert_array_equal(out_label[2:12, 2:22], label)
    np.testing.assert_array_equal(out[2:12, 2:22], image)
    pad = np.ones(out_label.shape, bool)
    pad[2:12, 2:22] = False
    assert (out_label[pad] == IGNORE).all()
    np.testing.assert_allclose(out[pad], np.broadcast_to(MEAN, out[pad].shape), atol=1e-4)


def test_crop_needs_padding_value():
    image, label = make_pair(10, 20)
    with pytest.raises(ValueError, match="padding"):
        transform.Crop(32)(image, label)


@pytest.mark.parametrize("seed", range(4))
def test_rand_rotate_alignment(seed):
    random.seed(seed)
    image, label = make_pair()
    rotate = transform.RandRotate((-30, 30), padding=MEAN, ignore_label=IGNORE, p=1.0)
    out, out_label = rotate(image, label)
    assert out.shape == image.shape and out_label.shape == label.shape
    assert_aligned(out, out_label, margin=2)


def test_rand_rotate_fills_corners_with_mean_and_ignore():
    image, label = make_pair()
    out, out_label = transform.RandRotate((45, 45), padding=MEAN, p=1.0)(image, label)
    assert out_label[0, 0] == IGNORE and out_label[-1, -1] == IGNORE
    np.testing.assert_allclose(out[0, 0], MEAN, atol=1e-3)
    assert_aligned(out, out_label)


def test_flips():
    image, label = make_pair()
    out, out_label = transform.RandomHorizontalFlip(p=1.0)(image, label)
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(out_label, label[:, ::-1])
    out, out_label = transform.RandomVerticalFlip(p=1.0)(image, label)
    np.testing.assert_array_equal(out, image[::-1])
    np.testing.assert_array_equal(out_label, label[::-1])
    out, out_label = transform.RandomHorizontalFlip(p=0.0)(image, label)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_label, label)


def test_gaussian_blur_changes_image_only():
    image, label = make_pair()
    blurred = False
    for seed in range(10):
        random.seed(seed)
        out, out_label = transform.RandomGaussianBlur(5)(image, label)
        np.testing.assert_array_equal(out_label, label)
        assert out.shape == image.shape
        assert_aligned(out, out_label)
        blurred |= not np.array_equal(out, image)
    assert blurred


def test_channel_order_round_trip():
    image, label = make_pair(8, 12)
    bgr, same_label = transform.RGB2BGR()(image, label)
    np.testing.assert_array_equal(bgr, image[:, :, ::-1])
    assert same_label is label
    rgb, _ = transform.BGR2RGB()(bgr, label)
    np.testing.assert_array_equal(rgb, image)


@pytest.mark.parametrize("seed", range(20))
def test_semseg_train_pipeline(seed):
    """The semseg training pipeline, inverted after Normalize, keeps every invariant."""
    random.seed(seed)
    size = 96
    pipeline = transform.Compose(
        [
            transform.RandScale((0.5, 2.0)),
            transform.RandRotate((-10, 10), padding=MEAN, ignore_label=IGNORE),
            transform.RandomGaussianBlur(),
            transform.RandomHorizontalFlip(),
            transform.Crop((size, size), crop_type="rand", padding=MEAN, ignore_label=IGNORE),
            transform.ToTensor(),
            transform.Normalize(MEAN, STD),
        ]
    )
    image, label = make_pair()
    image_t, label_t = pipeline(image, label)
    assert image_t.shape == (3, size, size) and image_t.dtype == torch.float32
    assert label_t.shape == (size, size) and label_t.dtype == torch.int64
    std, mean = np.array(STD, np.float32), np.array(MEAN, np.float32)
    restored = image_t.permute(1, 2, 0).numpy() * std + mean
    # Upscaling by 2 widens the bilinear blend band to 2 px, nearest rounding adds 1 px and the
    # 5x5 blur 2 px more, hence the wider margin.
    assert_aligned(restored, label_t.numpy().astype(np.uint8), margin=5, min_fraction=0.05)


def test_pipeline_pads_small_scaled_input():
    """Scaling 128x160 by 0.5 then cropping 96x96 pads: mean image, ignore label."""
    random.seed(0)
    pipeline = transform.Compose(
        [transform.RandScale((0.5, 0.5)), transform.Crop(96, crop_type="rand", padding=MEAN, ignore_label=IGNORE)]
    )
    out, out_label = pipeline(*make_pair())
    assert out.shape == (96, 96, 3)
    assert (out_label == IGNORE).sum() == 96 * 96 - 64 * 80
    assert_aligned(out, out_label)


@pytest.mark.parametrize(
    "build",
    [
        lambda: transform.Compose(transform.ToTensor()),
        lambda: transform.Normalize([]),
        lambda: transform.Normalize(MEAN, [1.0, 0.0, 1.0]),
        lambda: transform.Normalize(MEAN, STD[:2]),
        lambda: transform.Resize(10),
        lambda: transform.Resize((10, 0)),
        lambda: transform.RandScale((2.0, 0.5)),
        lambda: transform.RandScale((0.0, 1.0)),
        lambda: transform.RandScale((0.5, 2.0), aspect_ratio=(1.0,)),
        lambda: transform.Crop(0),
        lambda: transform.Crop((10, 10.5)),
        lambda: transform.Crop(10, crop_type="random"),
        lambda: transform.Crop(10, padding=[0, 0]),
        lambda: transform.Crop(10, padding=MEAN, ignore_label=256),
        lambda: transform.RandRotate((10, -10), padding=MEAN),
        lambda: transform.RandRotate((-10, 10), padding=None),
        lambda: transform.RandRotate((-10, 10), padding=MEAN, p=1.5),
        lambda: transform.RandomHorizontalFlip(p=-0.1),
        lambda: transform.RandomVerticalFlip(p=2),
        lambda: transform.RandomGaussianBlur(4),
        lambda: transform.RandomGaussianBlur(0),
    ],
)
def test_bad_constructor_arguments_raise(build):
    with pytest.raises(ValueError):
        build()


def test_mismatched_pair_is_rejected():
    image, label = make_pair()
    with pytest.raises(ValueError, match="same height and width"):
        transform.RandomHorizontalFlip(p=1.0)(image, label[:-1])


def test_alignment_check_detects_misalignment():
    """The checker itself fails when the label is shifted by a few pixels or flipped alone."""
    image, label = make_pair()
    with pytest.raises(AssertionError):
        assert_aligned(image, np.roll(label, 4, axis=1))
    with pytest.raises(AssertionError):
        assert_aligned(image, label[:, ::-1])


def test_vainf_augmentation_matches_a_restatement_of_vainfs_transforms():
    """VainF's ExtRandomScale, ExtRandomCrop(pad_if_needed) and flip restated on PIL images as torchvision applies
    them: the (W * s, H * s) target read as (h, w), all four sides padded with 0 when short, the crop offsets
    drawn with random.randint; ours gives the same arrays for the same random state."""
    from PIL import Image

    from util.data.transform import Compose, RandomHorizontalFlip, VainFRandomCrop, VainFRandomScale

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 50, 3)).astype(np.float32)
    label = rng.integers(0, 21, (37, 50)).astype(np.uint8)

    def pad(picture: Image.Image, p: int) -> Image.Image:
        out = Image.new(picture.mode, (picture.size[0] + 2 * p, picture.size[1] + 2 * p), 0)
        out.paste(picture, (p, p))
        return out

    padded = flipped = 0
    for seed in range(30):
        random.seed(seed)
        ours = Compose([VainFRandomScale([0.5, 2.0]), VainFRandomCrop(45), RandomHorizontalFlip()])(image, label)
        random.seed(seed)
        img, lbl = Image.fromarray(image.astype(np.uint8)), Image.fromarray(label)
        s = random.uniform(0.5, 2.0)
        th, tw = int(img.size[0] * s), int(img.size[1] * s)
        img, lbl = img.resize((tw, th), Image.BILINEAR), lbl.resize((tw, th), Image.NEAREST)
        for axis in (0, 1):
            if img.size[axis] < 45:
                p = int((1 + 45 - img.size[axis]) / 2)
                img, lbl, padded = pad(img, p), pad(lbl, p), padded + 1
        w, h = img.size
        i, j = (0, 0) if (w, h) == (45, 45) else (random.randint(0, h - 45), random.randint(0, w - 45))
        img, lbl = img.crop((j, i, j + 45, i + 45)), lbl.crop((j, i, j + 45, i + 45))
        if random.random() < 0.5:
            img, lbl, flipped = img.transpose(Image.FLIP_LEFT_RIGHT), lbl.transpose(Image.FLIP_LEFT_RIGHT), flipped + 1
        assert np.array_equal(ours[0], np.asarray(img, dtype=np.float32)), seed
        assert np.array_equal(ours[1], np.asarray(lbl)), seed
    assert 0 < padded < 30 and 0 < flipped < 30
