"""augmentation: pirat against PIR-AT's ``_sync_transform`` (nmndeep/Robust-Segmentation's dataset_wrappers.py),
restated here with PIL as it is written there, both drawing from Python's ``random`` seeded alike."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from util.config import load_config
from util.data.loaders import augmentation
from util.data.transform import PIRATRandomScaleCrop
from util.errors import UserError


def reference_sync_transform(img, mask, base_size, crop_size):
    if random.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.FLIP_LEFT_RIGHT)
    short_size = random.randint(int(base_size * 0.5), int(base_size * 2.0))
    w, h = img.size
    if h > w:
        ow = short_size
        oh = int(1.0 * h * ow / w)
    else:
        oh = short_size
        ow = int(1.0 * w * oh / h)
    img = img.resize((ow, oh), Image.BILINEAR)
    mask = mask.resize((ow, oh), Image.NEAREST)
    if short_size < crop_size:
        padh = crop_size - oh if oh < crop_size else 0
        padw = crop_size - ow if ow < crop_size else 0
        img = ImageOps.expand(img, border=(0, 0, padw, padh), fill=0)
        mask = ImageOps.expand(mask, border=(0, 0, padw, padh), fill=0)
    if random.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=random.random()))
    w, h = img.size
    x1 = random.randint(0, w - crop_size)
    y1 = random.randint(0, h - crop_size)
    img = img.crop((x1, y1, x1 + crop_size, y1 + crop_size))
    mask = mask.crop((x1, y1, x1 + crop_size, y1 + crop_size))
    return np.array(img), np.array(mask).astype("int32")


@pytest.mark.parametrize("shape", [(30, 44), (44, 30), (36, 36)])
def test_pirat_augmentation_is_the_reference_s_draw_for_draw(shape):
    """Forty draws per shape cover flips, blurs, and short sides below the crop (padding) and above."""
    rng = np.random.default_rng(0)
    image = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    label = rng.integers(0, 21, shape).astype(np.uint8)
    ours = PIRATRandomScaleCrop(32, 40)
    padded = 0
    for seed in range(40):
        random.seed(seed)
        expected_image, expected_label = reference_sync_transform(
            Image.fromarray(image), Image.fromarray(label), 32, 40
        )
        random.seed(seed)
        got_image, got_label = ours(image.astype(np.float32), label)
        assert got_image.dtype == np.float32 and np.array_equal(got_image, expected_image), seed
        assert np.array_equal(got_label, expected_label), seed
        padded += bool((expected_label[-1] == 0).all() and (expected_image[-1] == 0).all())
    assert padded  # some draws padded (short side 16..64 against a 40 crop)


def test_the_config_selects_it_and_checks_its_base():
    config = "config/synthetic/synthetic_pspnet18.yaml"
    cfg = load_config(config, ["augmentation", "pirat", "train_base_size", "520", "scale_min", "0.5", "scale_max", "2"])
    (step,) = augmentation(cfg)
    assert isinstance(step, PIRATRandomScaleCrop) and step.base_size == 520 and step.scale == (0.5, 2.0)
    with pytest.raises(UserError, match="train_base_size must be >= 1"):
        load_config(config, ["train_base_size", "0"])
