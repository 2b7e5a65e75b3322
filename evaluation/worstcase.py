"""Worst case over an ensemble of attacks, from stored per-image counts (no re-attacking).

Given every attack's per-image, per-class intersection / union / target counts at one eps, choose per image
which attack's prediction counts. Sums over images are minimised exactly by a per-image choice: pixel
accuracy (aAcc: the prediction with the fewest correct pixels, i.e. the lowest accuracy), mAcc and the
per-image mIoU. The pooled mIoU is not a sum over images, so it is minimised by the greedy per-image swap
search of SEA (Croce et al., "Towards Reliable Evaluation and Fast Training of Robust Semantic Segmentation
Models", ECCV 2024): start from the per-image worst by accuracy, then swap an image's prediction to another
attack's whenever that lowers the pooled mIoU, until no swap helps. The search here is deterministic (images
in order, each taking the attack that lowers the mIoU most) and is also started from each attack alone, so
the worst case is never above any single attack's mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from util.metrics import foreground_mask, per_image_miou


def pooled_miou(intersection: np.ndarray, union: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """semseg's mIoU of pooled counts (..., C), over the ``classes`` mask (all classes by default)."""
    iou = intersection / (union + 1e-10)
    return iou[..., classes].mean(-1) if classes is not None else iou.mean(-1)


def worst_by_accuracy(intersection: np.ndarray) -> np.ndarray:
    """Per image, the attack with the fewest correct pixels (A, N, C) -> (N,); ties go to the first.

    Every attack sees the same labels, so the fewest correct pixels is the lowest pixel accuracy.
    """
    return intersection.sum(-1).argmin(0)


def greedy_worst_miou(
    intersection: np.ndarray,
    union: np.ndarray,
    start: np.ndarray,
    classes: np.ndarray | None = None,
    max_rounds: int = 100,
) -> tuple[np.ndarray, float]:
    """SEA's greedy per-image swap search for the selection with the lowest pooled mIoU.

    Args:
        intersection: (A, N, C) counts of attack a on image n.
        union: (A, N, C) counts likewise.
        start: (N,) the attack index each image starts from.
        classes: boolean mask (C,) of the classes averaged (e.g. foreground only); all by default.
        max_rounds: passes over the images at most (the search stops earlier when a pass changes nothing).

    Returns:
        The selection (N,) and its pooled mIoU.
    """
    images = np.arange(intersection.shape[1])
    selection = np.array(start, dtype=np.int64)
    total_i = intersection[selection, images].sum(0).astype(np.float64)
    total_u = union[selection, images].sum(0).astype(np.float64)
    current = float(pooled_miou(total_i, total_u, classes))
    for _ in range(max_rounds):
        changed = False
        for n in images:
            cand_i = total_i - intersection[selection[n], n] + intersection[:, n]
            cand_u = total_u - union[selection[n], n] + union[:, n]
            values = pooled_miou(cand_i, cand_u, classes)
            best = int(values.argmin())
            if values[best] < current - 1e-12:
                selection[n], total_i, total_u, current = best, cand_i[best], cand_u[best], float(values[best])
                changed = True
        if not changed:
            break
    return selection, current


def search_worst_miou(
    intersection: np.ndarray, union: np.ndarray, classes: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """:func:`greedy_worst_miou` from the per-image worst by accuracy and from each attack alone; the lowest."""
    starts = [worst_by_accuracy(intersection)]
    starts += [np.full(intersection.shape[1], a) for a in range(intersection.shape[0])]
    return min((greedy_worst_miou(intersection, union, s, classes) for s in starts), key=lambda r: r[1])


@dataclass
class WorstCase:
    """Per-image attack choices (indices into the ensemble), one per metric minimised."""

    allacc: np.ndarray
    macc: np.ndarray
    image_miou: np.ndarray
    miou: np.ndarray
    fg_miou: np.ndarray


def worst_case(
    intersection: np.ndarray, union: np.ndarray, target: np.ndarray, background: int | None = 0
) -> WorstCase:
    """The worst-case selections of an ensemble from counts (A, N, C) of each attack on each image (fg-mIoU
    without class ``background``, see :func:`util.metrics.foreground_mask`)."""
    total_target = target.sum(0) + 1e-10  # (C,): the same for every attack
    image = np.nan_to_num(per_image_miou(intersection, union), nan=0.0)  # images without valid pixels tie
    classes = intersection.shape[-1]
    foreground = foreground_mask(classes, background)
    miou = search_worst_miou(intersection, union)[0]
    if foreground.all():  # no background class: fg-mIoU is the mIoU, no second search
        fg_miou = miou
    elif foreground.any():
        fg_miou = search_worst_miou(intersection, union, foreground)[0]
    else:
        fg_miou = np.zeros(intersection.shape[1], dtype=np.int64)
    return WorstCase(
        allacc=worst_by_accuracy(intersection),
        macc=(intersection / total_target).sum(-1).argmin(0),
        image_miou=image.argmin(0),
        miou=miou,
        fg_miou=fg_miou,
    )
