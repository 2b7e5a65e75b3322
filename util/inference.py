"""The original test protocol: multi-scale, sliding-window inference with softmax averaging.

The long side is resized to ``base_size * scale``, the image padded with the mean to at least one crop,
crops taken with stride ceil(2/3 * crop), softmax summed over overlapping windows, over scales and (clean
only) over a horizontal flip. With an attack, every crop is attacked separately against its label crop
(resized with nearest neighbour, padded with ignore), without flip, as in the DDC-AT test scripts. Crops
of one image go through the model in batches; in eval mode this gives the same result as one at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def net_process(model: nn.Module, crops: torch.Tensor, targets: torch.Tensor, attack: AttackFn | None,
                flip: bool) -> torch.Tensor:
    """Softmax probabilities (N, C, h, w) of normalized crops, optionally attacked or flip-averaged."""
    if attack is not None:
        crops = attack(crops, targets)
    with torch.no_grad():
        inputs = torch.cat([crops, crops.flip(3)], 0) if flip else crops
        output = model(inputs)
        if output.shape[-2:] != inputs.shape[-2:]:
            output = F.interpolate(output, inputs.shape[-2:], mode="bilinear", align_corners=True)
        output = F.softmax(output.float(), dim=1)
        if flip:
            n = crops.size(0)
            output = (output[:n] + output[n:].flip(3)) / 2
    return output


def scale_process(model: nn.Module, image: np.ndarray, label: np.ndarray, classes: int, crop_h: int, crop_w: int,
                  h: int, w: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                  attack: AttackFn | None = None, ignore_label: int = 255, crop_batch: int = 8) -> np.ndarray:
    """Class probabilities (h, w, classes) of one resized image by sliding-window inference."""
    ori_h, ori_w, _ = image.shape
    pad_h, pad_w = max(crop_h - ori_h, 0), max(crop_w - ori_w, 0)
    pad_h_half, pad_w_half = int(pad_h / 2), int(pad_w / 2)
    if pad_h > 0 or pad_w > 0:
        border = (pad_h_half, pad_h - pad_h_half, pad_w_half, pad_w - pad_w_half)
        image = cv2.copyMakeBorder(image, *border, cv2.BORDER_CONSTANT, value=mean)
        label = cv2.copyMakeBorder(label, *border, cv2.BORDER_CONSTANT, value=ignore_label)
    new_h, new_w, _ = image.shape
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().to(device)
    label_t = torch.from_numpy(np.ascontiguousarray(label)).long().to(device)
    prediction = torch.zeros(classes, new_h, new_w, device=device)
    count = torch.zeros(1, new_h, new_w, device=device)
    windows = crop_windows(new_h, new_w, crop_h, crop_w)
    for start in range(0, len(windows), crop_batch):
        batch = windows[start:start + crop_batch]
        crops = torch.stack([image_t[:, s_h:e_h, s_w:e_w] for s_h, e_h, s_w, e_w in batch])
        targets = torch.stack([label_t[s_h:e_h, s_w:e_w] for s_h, e_h, s_w, e_w in batch])
        probs = net_process(model, (crops - mean_t) / std_t, targets, attack, flip=attack is None)
        for (s_h, e_h, s_w, e_w), prob in zip(batch, probs):
            prediction[:, s_h:e_h, s_w:e_w] += prob
            count[:, s_h:e_h, s_w:e_w] += 1
    prediction /= count
    prediction = prediction[:, pad_h_half:pad_h_half + ori_h, pad_w_half:pad_w_half + ori_w]
    prediction = prediction.permute(1, 2, 0).cpu().numpy().astype(np.float64)
    return cv2.resize(prediction, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, classes)


def predict(model: nn.Module, image: np.ndarray, label: np.ndarray, classes: int, base_size: int, crop_h: int,
            crop_w: int, scales: Sequence[float], mean: Sequence[float], std: Sequence[float],
            device: torch.device, attack: AttackFn | None = None, ignore_label: int = 255,
            crop_batch: int = 8) -> np.ndarray:
    """Predicted class indices (h, w) of one RGB image (0-255) under the original multi-scale protocol."""
    h, w, _ = image.shape
    prediction = np.zeros((h, w, classes), dtype=np.float64)
    for scale in scales:
        long_size = round(scale * base_size)
        new_h = new_w = long_size
        if h > w:
            new_w = round(long_size / float(h) * w)
        else:
            new_h = round(long_size / float(w) * h)
        image_scale = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label_scale = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        prediction += scale_process(model, image_scale, label_scale, classes, crop_h, crop_w, h, w, mean, std,
                                    device, attack, ignore_label, crop_batch)
    return np.argmax(prediction / len(scales), axis=2)
