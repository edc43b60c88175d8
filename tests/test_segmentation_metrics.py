"""Segmentation metrics pinned to a hand-computed 2x3 image, and pixel_rows' contract (labeled pixels only,
teacher rows aligned, classification untouched)."""
import math

import pytest
import torch
import torch.nn.functional as F

from utils.segmentation import IGNORE, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, pixel_rows

# 3 classes; class 2 is in neither the truth nor a scored prediction: the IGNORE pixel's prediction is 2,
# and it must not count
LABELS = torch.tensor([[[0, 0, 1],
                        [1, 1, IGNORE]]])
PRED = torch.tensor([[[0, 1, 1],
                      [1, 0, 2]]])
# five labeled pixels: (t0 p0) (t0 p1) (t1 p1) / (t1 p1) (t1 p0)
CONF = [[1, 1, 0],
        [1, 2, 0],
        [0, 0, 0]]


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, LABELS, 3)
    assert conf.dtype == torch.int64 and conf.device == LABELS.device
    assert conf.tolist() == CONF


def test_iou_miou_accuracy_by_hand():
    conf = torch.tensor(CONF)
    iou = iou_per_class(conf)
    # class 0: TP 1, FP 1 (a 1 predicted 0), FN 1 (a 0 predicted 1) -> 1/3; class 1: TP 2, FP 1, FN 1 -> 1/2
    assert iou[:2] == pytest.approx([1 / 3, 1 / 2]) and math.isnan(iou[2])
    assert mean_iou(conf) == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)  # the NaN class left out, not a 0
    assert mean_iou(conf, ignore_background=True) == pytest.approx(50.0)
    assert pixel_accuracy(conf) == pytest.approx(60.0)  # 3 of 5 labeled pixels


def test_empty_and_out_of_range():
    empty = confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGNORE), 3)
    assert empty.sum() == 0 and math.isnan(mean_iou(empty)) and math.isnan(pixel_accuracy(empty))
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0]), torch.tensor([255]), 3)  # a VOC border pixel left unmapped
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_pixel_rows_drops_ignore_and_aligns_teacher():
    logits, teacher = torch.randn(1, 3, 2, 3), torch.randn(1, 3, 2, 3)
    rows, y, t_rows = pixel_rows(logits, LABELS, teacher)
    kept = [(h, w) for h in range(2) for w in range(3) if LABELS[0, h, w] >= 0]
    assert rows.shape == t_rows.shape == (5, 3) and y.tolist() == [0, 0, 1, 1, 1]
    for i, (h, w) in enumerate(kept):
        assert torch.equal(rows[i], logits[0, :, h, w]) and torch.equal(t_rows[i], teacher[0, :, h, w])


def test_pixel_rows_cross_entropy_is_ignore_index():
    logits, labels = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    labels[0, 1, :3] = IGNORE
    rows, y = pixel_rows(logits, labels)
    assert F.cross_entropy(rows, y).item() == pytest.approx(
        F.cross_entropy(logits, labels, ignore_index=IGNORE).item(), rel=1e-6)


def test_pixel_rows_classification_unchanged():
    logits, labels, teacher = torch.randn(4, 10), torch.tensor([1, -1, 3, 0]), torch.randn(4, 10)
    out = pixel_rows(logits, labels, teacher)
    assert out[0] is logits and out[1] is labels and out[2] is teacher
