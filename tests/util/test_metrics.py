"""Metrics against a hand-computed confusion matrix."""

import numpy as np
import pytest
import torch

from util.metrics import SegMetric, intersection_and_union


def test_counts_match_hand_computed_confusion():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    output = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    # class 0: target {0,0}, pred {0,1} at those; pred 0 also at (1,1) -> I=1, |pred|=2, |target|=2, U=3
    # class 1: target 3 px, pred 1 at two of them -> I=2, |pred|=3 (one on a class-0 pixel), U=4
    # class 2: target 2 px, pred 2 at one (the ignored pixel does not count) -> I=1, |pred|=2, U=3
    inter, union, tgt = intersection_and_union(output, target, 3)
    assert inter.tolist() == [1, 2, 1]
    assert union.tolist() == [3, 4, 3]
    assert tgt.tolist() == [2, 3, 2]
    metric = SegMetric(3)
    metric.update(torch.from_numpy(output), torch.from_numpy(target))
    assert metric.miou == pytest.approx(np.mean([1 / 3, 2 / 4, 1 / 3]))
    assert metric.macc == pytest.approx(np.mean([1 / 2, 2 / 3, 1 / 2]))
    assert metric.allacc == pytest.approx(4 / 7)


def test_absent_class_counts_as_zero_iou_like_semseg():
    metric = SegMetric(3)
    metric.update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert metric.iou_class.tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert metric.miou == pytest.approx(1 / 3)


def test_accumulates_over_images():
    metric = SegMetric(2)
    metric.update(np.array([0, 1]), np.array([0, 1]))
    metric.update(np.array([1, 1]), np.array([0, 1]))
    assert metric.intersection.tolist() == [1, 2]
    assert metric.union.tolist() == [2, 3]


def test_per_image_miou_averages_over_classes_present_in_label_or_prediction():
    from util.metrics import mean_image_miou, per_image_miou

    # image 1: classes 0 and 1 present (class 2 nowhere): IoU 1/3 and 2/4 -> (1/3 + 1/2) / 2
    # image 2: only class 2, predicted right -> 1; image 3: every pixel ignored -> no value
    inter = np.array([[1, 2, 0], [0, 0, 4], [0, 0, 0]])
    union = np.array([[3, 4, 0], [0, 0, 4], [0, 0, 0]])
    values = per_image_miou(inter, union)
    assert values[:2].tolist() == pytest.approx([(1 / 3 + 1 / 2) / 2, 1.0])
    assert np.isnan(values[2])
    assert mean_image_miou(inter, union) == pytest.approx(((1 / 3 + 1 / 2) / 2 + 1) / 2)
    # a class only in the prediction counts (IoU 0), a class in neither does not (semseg's mIoU counts it as 0)
    target = np.array([[0, 0], [1, 1]])
    output = np.array([[0, 0], [1, 2]])
    i, u, _ = intersection_and_union(output, target, 4)
    assert per_image_miou(i[None].numpy(), u[None].numpy()).tolist() == pytest.approx([(1 + 1 / 2 + 0) / 3])
    metric = SegMetric(4)
    metric.update(output, target)
    assert metric.miou == pytest.approx((1 + 1 / 2 + 0 + 0) / 4)


def test_foreground_miou_leaves_out_class_0_and_summarize_pools_images():
    from util.metrics import summarize

    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    output = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    metric = SegMetric(3)
    metric.update(output, target)
    assert metric.fg_miou == pytest.approx((2 / 4 + 1 / 3) / 2)  # the hand-computed IoUs above, without class 0
    counts = [np.stack([c.numpy()] * 2) for c in intersection_and_union(output, target, 3)]  # the image twice
    report = summarize(*counts)
    assert report["mIoU"] == pytest.approx(metric.miou) and report["fg_mIoU"] == pytest.approx(metric.fg_miou)
    assert report["allAcc"] == pytest.approx(4 / 7) and report["image_mIoU"] == pytest.approx(metric.miou)
    assert report["iou_class"] == pytest.approx([1 / 3, 2 / 4, 1 / 3])


def test_foreground_miou_follows_the_configured_background_class():
    """Cityscapes and Stanford have no background (class 0 is road / sky): fg-mIoU is then the mIoU, in the
    pooled metric, the report and the worst-case search alike; another background class is left out instead."""
    from evaluation.worstcase import worst_case
    from util.metrics import summarize

    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    output = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    none, two = SegMetric(3, background=None), SegMetric(3, background=2)
    for metric in (none, two):
        metric.update(output, target)
    assert none.fg_miou == pytest.approx(none.miou)
    assert two.fg_miou == pytest.approx((1 / 3 + 2 / 4) / 2)  # classes 0 and 1
    counts = [np.stack([c.numpy()] * 2) for c in intersection_and_union(output, target, 3)]
    assert summarize(*counts, background=None)["fg_mIoU"] == pytest.approx(none.miou)
    attacks = [np.stack([c] * 2) for c in counts]  # two identical attacks
    assert worst_case(*attacks, background=None).fg_miou.tolist() == worst_case(*attacks).miou.tolist()
