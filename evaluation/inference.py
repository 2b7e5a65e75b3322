"""The test protocol: multi-scale, sliding-window inference with softmax averaging, and how attacks enter it.

As semseg / DDC-AT: the long side resized to ``base_size * scale``, padded with the mean to one crop, crops with
stride ceil(2/3 * crop), softmax summed over windows, scales and (clean) a horizontal flip; ``eval_crop`` picks
the windows (sliding, whole, center). ``attack_protocol``: ``per_crop`` (the original: each crop attacked alone
against its label crop) or ``whole_image`` (one perturbation through the whole inference,
:class:`WholeImageForward`). Crops go through the model ``crop_batch`` at a time; random starts are drawn per
batch, so ``batch_size_val`` is part of the stored predictions' fingerprint (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from util.config import IMAGENET_MEAN, IMAGENET_STD
from util.data.dataset import mean_std_255

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Protocol:
    """How one image is predicted and attacked (the TEST keys of the config; see util/config.py)."""

    classes: int
    base_size: int
    crop_h: int
    crop_w: int
    scales: tuple[float, ...] = (1.0,)
    ignore_label: int = 255
    crop_batch: int = 8
    eval_crop: str = "sliding"
    attack_protocol: str = "per_crop"
    ignore_as_background: bool = False
    flip: bool = True  # clean inference averages with the horizontal flip (the original always does)
    mean: tuple[float, ...] = IMAGENET_MEAN  # the model's input normalisation, in [0, 1] units
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def from_config(cls, cfg) -> Protocol:
        return cls(
            cfg.classes,
            cfg.base_size,
            cfg.test_h,
            cfg.test_w,
            tuple(cfg.scales),
            cfg.ignore_label,
            cfg.batch_size_val,
            cfg.eval_crop,
            cfg.attack_protocol,
            cfg.ignore_as_background,
            cfg.flip,
            tuple(cfg.mean),
            tuple(cfg.std),
        )

    def scaled_size(self, h: int, w: int, scale: float) -> tuple[int, int]:
        """(new_h, new_w): the long side resized to ``base_size * scale``, as semseg rounds it; with base_size 0
        the image's own size times ``scale`` (native resolution at scale 1, as VainF evaluates)."""
        if self.base_size == 0:
            return round(h * scale), round(w * scale)
        long_size = round(scale * self.base_size)
        if h > w:
            return long_size, round(long_size / float(h) * w)
        return round(long_size / float(w) * h), long_size

    def layout(self, new_h: int, new_w: int) -> tuple[tuple[int, int, int, int], list]:
        """Padding (top, bottom, left, right) of a resized image and its windows (s_h, e_h, s_w, e_w)."""
        crop_h, crop_w = (new_h, new_w) if self.eval_crop == "whole" else (self.crop_h, self.crop_w)
        pad_h, pad_w = max(crop_h - new_h, 0), max(crop_w - new_w, 0)
        pad = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
        full_h, full_w = new_h + pad_h, new_w + pad_w
        if self.eval_crop == "center":
            s_h, s_w = (full_h - crop_h) // 2, (full_w - crop_w) // 2
            return pad, [(s_h, s_h + crop_h, s_w, s_w + crop_w)]
        return pad, crop_windows(full_h, full_w, crop_h, crop_w)

    def scored_mask(self, h: int, w: int) -> np.ndarray | None:
        """Pixels of an h x w image that are scored: with ``center`` those whose prediction comes from the
        central crop at every scale; None (all) otherwise."""
        if self.eval_crop != "center":
            return None
        mask = np.ones((h, w), dtype=bool)
        for scale in self.scales:
            new_h, new_w = self.scaled_size(h, w, scale)
            (top, _, left, _), [(s_h, e_h, s_w, e_w)] = self.layout(new_h, new_w)
            inside = np.zeros((new_h + 2 * self.crop_h, new_w + 2 * self.crop_w), dtype=np.float32)
            inside[s_h:e_h, s_w:e_w] = 1
            inside = inside[top : top + new_h, left : left + new_w]
            mask &= cv2.resize(inside, (w, h), interpolation=cv2.INTER_LINEAR) > 1 - 1e-4
        return mask

    def scored_label(self, label: np.ndarray) -> np.ndarray:
        """The label that metrics and attacks see: ignore -> 0 with ``ignore_as_background``, then pixels
        outside :meth:`scored_mask` -> ignore. Apply once per raw label."""
        label = np.array(label, dtype=np.uint8)
        if self.ignore_as_background:
            label[label == self.ignore_label] = 0
        mask = self.scored_mask(*label.shape)
        if mask is not None:
            label[~mask] = self.ignore_label
        return label


def crop_windows(new_h: int, new_w: int, crop_h: int, crop_w: int, stride_rate: float = 2 / 3) -> list:
    """(s_h, e_h, s_w, e_w) of every sliding window, as semseg places them."""
    stride_h = int(np.ceil(crop_h * stride_rate))
    stride_w = int(np.ceil(crop_w * stride_rate))
    grid_h = int(np.ceil(float(new_h - crop_h) / stride_h) + 1)
    grid_w = int(np.ceil(float(new_w - crop_w) / stride_w) + 1)
    windows = []
    for index_h in range(grid_h):
        for index_w in range(grid_w):
            e_h = min(index_h * stride_h + crop_h, new_h)
            e_w = min(index_w * stride_w + crop_w, new_w)
            windows.append((e_h - crop_h, e_h, e_w - crop_w, e_w))
    return windows


def window_probs(model: nn.Module, crops: torch.Tensor, flip: bool) -> torch.Tensor:
    """Softmax probabilities (N, C, h, w) of normalized crops, flip-averaged if asked; differentiable."""
    inputs = torch.cat([crops, crops.flip(3)], 0) if flip else crops
    output = model(inputs)
    if output.shape[-2:] != inputs.shape[-2:]:
        output = F.interpolate(output, inputs.shape[-2:], mode="bilinear", align_corners=True)
    output = F.softmax(output.float(), dim=1)
    if flip:
        n = crops.size(0)
        output = (output[:n] + output[n:].flip(3)) / 2
    return output


class WholeImageForward:
    """The protocol as one differentiable function, for ``whole_image`` attacks (``Attack(forward=...)``).

    Maps normalized images (N, 3, h, w) at original resolution to the log of the protocol's averaged class
    probabilities (N, C, h, w). As "logits" these are exact for every loss built on softmax or argmax:
    softmax(log p) = p, so cross-entropy is the NLL of the averaged prediction, accuracy-based selection
    sees the real prediction, and JS / cosine losses see p. Margin losses on raw logits see log p (same
    argmax, a different scale). Resizing is bilinear (align_corners False, like cv2.INTER_LINEAR), padding
    is 0 (the mean, after normalization); scored-out pixels of ``center`` get log(tiny).
    """

    def __init__(self, model: nn.Module, protocol: Protocol) -> None:
        self.model = model
        self.protocol = protocol

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.protocol
        n, _, h, w = x.shape
        total = x.new_zeros(n, p.classes, h, w)
        for scale in p.scales:
            new_h, new_w = p.scaled_size(h, w, scale)
            xs = (
                x
                if (new_h, new_w) == (h, w)
                else F.interpolate(x, (new_h, new_w), mode="bilinear", align_corners=False)
            )
            (top, bottom, left, right), windows = p.layout(new_h, new_w)
            xs = F.pad(xs, (left, right, top, bottom))
            prob = xs.new_zeros(n, p.classes, *xs.shape[-2:])
            count = xs.new_zeros(1, 1, *xs.shape[-2:])
            for start in range(0, len(windows), p.crop_batch):
                batch = windows[start : start + p.crop_batch]
                crops = torch.cat([xs[..., s_h:e_h, s_w:e_w] for s_h, e_h, s_w, e_w in batch])
                probs = window_probs(self.model, crops, p.flip).split(n)
                for (s_h, e_h, s_w, e_w), prob_window in zip(batch, probs):
                    prob[..., s_h:e_h, s_w:e_w] += prob_window
                    count[..., s_h:e_h, s_w:e_w] += 1
            prob = (prob / count.clamp_min(1))[..., top : top + new_h, left : left + new_w]
            if (new_h, new_w) != (h, w):
                prob = F.interpolate(prob, (h, w), mode="bilinear", align_corners=False)
            total = total + prob
        return (total / len(p.scales)).clamp_min(torch.finfo(total.dtype).tiny).log()


def scale_process(
    model: nn.Module,
    image: np.ndarray,
    label: np.ndarray,
    protocol: Protocol,
    h: int,
    w: int,
    device: torch.device,
    attack: AttackFn | None = None,
    keep_image: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (h, w, classes) of one resized image by window inference; with ``keep_image``
    also the perturbations of the attacked crops assembled (overlaps averaged) and resized to (h, w, 3)."""
    p = protocol
    mean, std = mean_std_255(p.mean, p.std)
    ori_h, ori_w, _ = image.shape
    (top, bottom, left, right), windows = p.layout(ori_h, ori_w)
    if top + bottom + left + right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=mean)
        label = cv2.copyMakeBorder(label, top, bottom, left, right, cv2.BORDER_CONSTANT, value=p.ignore_label)
    new_h, new_w, _ = image.shape
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().to(device)
    label_t = torch.from_numpy(np.ascontiguousarray(label)).long().to(device)
    prediction = torch.zeros(p.classes, new_h, new_w, device=device, dtype=torch.float64)  # summed as the original
    count = torch.zeros(1, new_h, new_w, device=device)
    delta = torch.zeros_like(image_t) if keep_image else None
    for start in range(0, len(windows), p.crop_batch):
        batch = windows[start : start + p.crop_batch]
        crops = (torch.stack([image_t[:, s_h:e_h, s_w:e_w] for s_h, e_h, s_w, e_w in batch]) - mean_t) / std_t
        if attack is not None:
            targets = torch.stack([label_t[s_h:e_h, s_w:e_w] for s_h, e_h, s_w, e_w in batch])
            crops = attack(crops, targets)
        with torch.no_grad():
            probs = window_probs(model, crops, flip=attack is None and p.flip)
        for (s_h, e_h, s_w, e_w), prob, crop in zip(batch, probs, crops):
            if delta is not None:
                delta[:, s_h:e_h, s_w:e_w] += crop * std_t[0] + mean_t[0] - image_t[:, s_h:e_h, s_w:e_w]
            prediction[:, s_h:e_h, s_w:e_w] += prob.double()
            count[:, s_h:e_h, s_w:e_w] += 1
    prediction = (prediction / count.clamp_min(1))[:, top : top + ori_h, left : left + ori_w]
    prediction = prediction.permute(1, 2, 0).cpu().numpy().astype(np.float64)
    prediction = cv2.resize(prediction, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, p.classes)
    if delta is None:
        return prediction, None
    delta = (delta / count.clamp_min(1))[:, top : top + ori_h, left : left + ori_w].permute(1, 2, 0).cpu().numpy()
    return prediction, cv2.resize(delta, (w, h), interpolation=cv2.INTER_LINEAR)


def predict(
    model: nn.Module,
    image: np.ndarray,
    label: np.ndarray,
    protocol: Protocol,
    device: torch.device,
    attack: AttackFn | None = None,
    return_image: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predicted class indices (h, w) of one RGB image (0-255) under ``protocol``, optionally attacked.

    Args:
        model: segmentation model in eval mode.
        image: (h, w, 3) float RGB in 0..255.
        label: (h, w) label as :meth:`Protocol.scored_label` returns it (the attack's target).
        protocol: inference and attack settings.
        device: where the model runs.
        attack: normalized crops/images and labels -> attacked normalized inputs (an :class:`Attack`); for
            ``whole_image`` it must be built with ``forward=WholeImageForward(model, protocol)``.
        return_image: also return the attacked image (h, w, 3) in 0..255: for ``whole_image`` exactly the
            image that was predicted; for ``per_crop`` the image plus the crops' perturbations assembled
            (overlaps and scales averaged, resized back), a picture of what each crop saw separately.

    Unscored pixels (``eval_crop: center``) are predicted as ``ignore_label``.
    """
    p = protocol
    h, w, _ = image.shape
    if attack is not None and p.attack_protocol == "whole_image":
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in mean_std_255(p.mean, p.std))
        x = (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().to(device)[None] - mean) / std
        target = torch.from_numpy(np.ascontiguousarray(label)).long().to(device)[None]
        adv = (attack(x, target) * std + mean)[0].permute(1, 2, 0).cpu().numpy()
        prediction = predict(model, adv, label, protocol, device)
        return (prediction, adv) if return_image else prediction
    total = np.zeros((h, w, p.classes), dtype=np.float64)
    delta = np.zeros((h, w, 3), dtype=np.float32)
    for scale in p.scales:
        new_h, new_w = p.scaled_size(h, w, scale)
        image_scale = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label_scale = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        prob, delta_scale = scale_process(model, image_scale, label_scale, p, h, w, device, attack, return_image)
        total += prob
        if delta_scale is not None:
            delta += delta_scale.reshape(h, w, 3)
    prediction = np.argmax(total / len(p.scales), axis=2)
    mask = p.scored_mask(h, w)
    if mask is not None:
        prediction[~mask] = p.ignore_label
    if not return_image:
        return prediction
    return prediction, np.clip(image + delta / len(p.scales), 0, 255)
