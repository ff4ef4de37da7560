"""ConfusionMatrix/Metrics against an independent NumPy computation written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vss_cli.engine.metrics import ConfusionMatrix, Metrics

IGNORE = 255


def reference(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = IGNORE) -> dict:
    """Per-class loops over boolean masks; a class absent from both GT and prediction is left out."""
    valid = target != ignore
    total = int(valid.sum())
    ious, accs, fw, correct = [], [], 0.0, 0
    per_iou, per_acc = [], []
    for c in range(num_classes):
        gt_c = (target == c) & valid
        pred_c = (pred == c) & valid
        inter = int((gt_c & pred_c).sum())
        union = int((gt_c | pred_c).sum())
        n_gt = int(gt_c.sum())
        correct += inter
        iou = inter / union if union else None
        acc = inter / n_gt if n_gt else None
        per_iou.append(iou)
        per_acc.append(acc)
        if iou is not None:
            ious.append(iou)
        if acc is not None:
            accs.append(acc)
            fw += (n_gt / total) * iou
    return {
        "miou": sum(ious) / len(ious), "pixel_accuracy": correct / total, "mean_accuracy": sum(accs) / len(accs),
        "fw_iou": fw, "per_class_iou": per_iou, "per_class_accuracy": per_acc, "pixels": total,
    }


def computed(pred: np.ndarray, target: np.ndarray, num_classes: int, splits: int = 1) -> Metrics:
    cm = ConfusionMatrix(num_classes, IGNORE)
    for p, t in zip(np.array_split(pred, splits), np.array_split(target, splits), strict=True):
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    assert cm.mat.dtype == torch.int64
    return cm.compute()


def assert_agrees(m: Metrics, ref: dict) -> None:
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou"):
        assert getattr(m, key) == pytest.approx(ref[key], abs=1e-9), key
    for key in ("per_class_iou", "per_class_accuracy"):
        got, want = getattr(m, key), ref[key]
        assert [g is None for g in got] == [w is None for w in want], key
        assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], abs=1e-9)
    assert m.pixels == ref["pixels"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_with_ignore_and_absent_classes(seed):
    rng = np.random.default_rng(seed)
    n = 7  # class 5 only predicted, class 6 absent from both
    target = rng.integers(0, 5, size=(4, 23, 31))
    target[rng.random(target.shape) < 0.15] = IGNORE
    pred = rng.integers(0, 6, size=target.shape)
    agree = rng.random(pred.shape) < 0.5
    pred[agree & (target != IGNORE)] = target[agree & (target != IGNORE)]
    ref = reference(pred, target, n)
    m = computed(pred, target, n, splits=3)
    assert_agrees(m, ref)
    assert m.per_class_iou[6] is None and m.per_class_accuracy[6] is None
    assert m.per_class_iou[5] == 0.0 and m.per_class_accuracy[5] is None


def test_hand_made_map():
    # GT:   0 0 1 | 1 2 255      pred: 0 1 1 | 2 2 0   (3 classes + class 3 absent everywhere)
    target = np.array([[0, 0, 1], [1, 2, IGNORE]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    m = computed(pred, target, 4)
    # class 0: inter 1, union 2 -> 1/2; class 1: inter 1, union 3 -> 1/3; class 2: inter 1, union 2 -> 1/2
    assert m.miou == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3, abs=1e-12)
    assert m.pixel_accuracy == pytest.approx(3 / 5, abs=1e-12)
    assert m.mean_accuracy == pytest.approx((1 / 2 + 1 / 2 + 1) / 3, abs=1e-12)
    assert m.fw_iou == pytest.approx(2 / 5 * 1 / 2 + 2 / 5 * 1 / 3 + 1 / 5 * 1 / 2, abs=1e-12)
    assert m.per_class_iou[3] is None
    assert m.pixels == 5
    assert_agrees(m, reference(pred, target, 4))


def test_matrix_rows_are_ground_truth_and_ignore_is_excluded():
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(torch.tensor([[2, 0, 1]]), torch.tensor([[1, IGNORE, 1]]))
    assert cm.mat.tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 0]]


def test_all_ignore_gives_nan_not_an_error():
    m = computed(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), IGNORE), 3)
    assert math.isnan(m.miou) and math.isnan(m.pixel_accuracy) and m.pixels == 0


def test_report_keys_follow_the_seed_guide():
    m = computed(np.array([[0, 1]]), np.array([[0, 1]]), 2)
    report = m.to_report(["road", "car"])
    for key in ("mIoU", "Pixel_Accuracy", "Mean_Accuracy", "Frequency_Weighted_IoU"):
        assert report[key] == 1.0
    assert report["per_class_iou"] == {"road": 1.0, "car": 1.0}
