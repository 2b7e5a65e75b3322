"""Segmentation metrics: per-class intersection / union / target pixel counts summed over a dataset.

Kept in semseg's convention so numbers compare with the papers: IoU_c = I_c / (U_c + 1e-10), so a class
absent from both prediction and ground truth counts as IoU 0 in the mean; mIoU and mAcc average over all
classes; allAcc is the pixel accuracy over non-ignored pixels.

Two further views for robustness reports: the foreground mIoU (the same pooled IoUs averaged over classes
1..C-1, i.e. without background class 0, which dominates the pixels of VOC-like data) and the per-image
mIoU (each image's IoU averaged over the classes present in its ground truth or its prediction, then
averaged over images; an attack that wipes out small objects shows here even when the pooled counts
hardly move).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from util import dist


def intersection_and_union(
    output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (intersection, union, target) pixel counts of a prediction, on the tensors' device.

    Pixels whose target is ``ignore_index`` are excluded; predictions outside [0, classes) never count.
    """
    output = torch.as_tensor(output).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long().to(output.device)
    valid = target != ignore_index
    output, target = output[valid], target[valid]
    area_output = torch.bincount(output[(output >= 0) & (output < classes)], minlength=classes)[:classes]
    area_target = torch.bincount(target, minlength=classes)[:classes]
    area_intersection = torch.bincount(target[output == target], minlength=classes)[:classes]
    return area_intersection, area_output + area_target - area_intersection, area_target


def per_image_miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU of each image from its per-class counts (N, C): IoU averaged over the classes whose union is
    non-zero (present in the image's ground truth or prediction); NaN for an image without a valid pixel.
    """
    intersection, union = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
    present = union > 0
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=present)
    count = present.sum(-1)
    return np.divide(iou.sum(-1), count, out=np.full(count.shape, np.nan), where=count > 0)


def mean_image_miou(intersection: np.ndarray, union: np.ndarray) -> float:
    """Per-image mIoU averaged over the images that have valid pixels (NaN when none has)."""
    values = per_image_miou(intersection, union)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


@dataclass
class SegMetric:
    """Running sums of intersection / union / target counts."""

    classes: int
    ignore_index: int = 255
    background: int | None = 0  # the class fg_miou leaves out; None: there is none (fg_miou = miou)
    intersection: np.ndarray = field(init=False)
    union: np.ndarray = field(init=False)
    target: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.intersection = np.zeros(self.classes, dtype=np.int64)
        self.union = np.zeros(self.classes, dtype=np.int64)
        self.target = np.zeros(self.classes, dtype=np.int64)

    def update(self, output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add the counts of one prediction (class indices) against its target."""
        counts = intersection_and_union(output, target, self.classes, self.ignore_index)
        self.add_counts(*torch.stack(counts).cpu().numpy())  # one copy to the host, not three

    def add_counts(self, intersection: np.ndarray, union: np.ndarray, target: np.ndarray) -> None:
        self.intersection += intersection.astype(np.int64)
        self.union += union.astype(np.int64)
        self.target += target.astype(np.int64)

    @property
    def iou_class(self) -> np.ndarray:
        return self.intersection / (self.union + 1e-10)

    @property
    def acc_class(self) -> np.ndarray:
        return self.intersection / (self.target + 1e-10)

    @property
    def miou(self) -> float:
        return float(np.mean(self.iou_class))

    @property
    def fg_miou(self) -> float:
        """mIoU without the background class (same convention as :attr:`miou`); all classes when there is no
        background (``background`` None: Cityscapes' class 0 is road)."""
        foreground = foreground_mask(self.classes, self.background)
        return float(np.mean(self.iou_class[foreground])) if foreground.any() else float("nan")

    @property
    def macc(self) -> float:
        return float(np.mean(self.acc_class))

    @property
    def allacc(self) -> float:
        return float(self.intersection.sum() / (self.target.sum() + 1e-10))


def foreground_mask(classes: int, background: int | None = 0) -> np.ndarray:
    """Boolean (C,): the classes that fg-mIoU averages, all but ``background`` (all when it is None)."""
    return np.arange(classes) != (-1 if background is None else background)


def summarize(intersection: np.ndarray, union: np.ndarray, target: np.ndarray, background: int | None = 0) -> dict:
    """Report metrics of per-image counts (N, C): pooled mIoU, fg_mIoU (without class ``background``), mAcc,
    allAcc, per-class IoU and accuracy, and the per-image mIoU averaged over images."""
    metric = SegMetric(intersection.shape[-1], background=background)
    metric.add_counts(intersection.sum(0), union.sum(0), target.sum(0))
    present = union.sum(0) > 0  # VainF's Mean IoU: classes in neither prediction nor label are left out
    present_miou = float(metric.iou_class[present].mean()) if present.any() else 0.0
    return {
        "mIoU": metric.miou,
        "fg_mIoU": metric.fg_miou,
        "present_mIoU": present_miou,
        "image_mIoU": mean_image_miou(intersection, union),
        "mAcc": metric.macc,
        "allAcc": metric.allacc,
        "iou_class": metric.iou_class.tolist(),
        "acc_class": metric.acc_class.tolist(),
    }


class AverageMeter:
    """Current value and running average (semseg's meter, for losses and timings)."""

    def __init__(self) -> None:
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


def reduced(metric: SegMetric) -> SegMetric:
    """The counts summed over processes."""
    counts = dist.all_reduce_sum(torch.from_numpy(np.stack([metric.intersection, metric.union, metric.target])))
    total = SegMetric(metric.classes, metric.ignore_index)
    total.add_counts(*counts.numpy())
    return total
