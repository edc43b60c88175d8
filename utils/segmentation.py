"""Pixels as rows, and the metrics of semantic segmentation: a confusion matrix, per-class IoU, mIoU and pixel
accuracy (the PASCAL VOC / Cityscapes definitions: IoU = TP / (TP + FP + FN) per class over the whole split,
mIoU its mean over the classes that occur).

A pixel without a label carries IGNORE (-1), the value a transfer set's unlabeled image already carries, so
one test (label >= 0) serves both tasks; the loaders map VOC's 255 (object borders, "difficult") to it. Such
a pixel reaches no loss and no metric.
"""
import math

import torch

IGNORE = -1  # the label of a pixel (or an image) that has none


def pixel_rows(logits: torch.Tensor, labels: torch.Tensor, *others: torch.Tensor) -> tuple:
    """(rows, labels, *other_rows): every labeled pixel (label >= 0) of logits [N, C, H, W] as a row of [P, C],
    its label in [P], and the same pixels' rows of each other [N, C, H, W] tensor (the teacher's logits), in
    the same order. A per-row loss (soft_kl, cross-entropy) then averages over labeled pixels, as the VOC
    and Cityscapes recipes do. Classification inputs (logits [N, C], labels [N]) come back as they are, the
    same tensors, so one loss serves both tasks."""
    if logits.dim() == 2:
        return (logits, labels, *others)
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"pixel_rows takes logits [N, C, H, W] and labels [N, H, W], "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    for other in others:
        if other.shape != logits.shape:
            raise ValueError(f"every tensor beside the logits must be {tuple(logits.shape)}, got {tuple(other.shape)}")
    labeled = labels >= 0
    # [N, H, W, C] indexed by the [N, H, W] mask: one [P, C] row per labeled pixel, in (n, h, w) order
    return (logits.permute(0, 2, 3, 1)[labeled], labels[labeled],
            *(other.permute(0, 2, 3, 1)[labeled] for other in others))


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C, C], rows the true class, columns the predicted one, over the labeled pixels (label >= 0) of
    pred and labels (any same shape), on their device. Sum it over batches; the metrics below read the sum
    (IoU over the whole split, not a mean of per-image IoUs). A label or prediction outside 0..C-1 is a
    ValueError: it would land in another cell without a word."""
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels must have one shape, got {tuple(pred.shape)} and {tuple(labels.shape)}")
    labeled = labels >= 0
    truth, guess = labels[labeled].long(), pred[labeled].long()
    if bool(((truth >= num_classes) | (guess < 0) | (guess >= num_classes)).any()):
        raise ValueError(f"labels and predictions must be in 0..{num_classes - 1} (or {IGNORE} for no label)")
    cells = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> list:
    """IoU = TP / (TP + FP + FN) of each class as a float; NaN for a class absent from both the truth and the
    predictions (there is nothing to score, and 0 would be a verdict)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(dim=0) + conf.sum(dim=1) - tp  # TP + FP + FN
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan)).tolist()


def mean_iou(conf: torch.Tensor, ignore_background: bool = False) -> float:
    """mIoU in percent: the mean of iou_per_class over the classes it scores (NaN ones left out; NaN if none).
    Background (class 0) counts, as VOC's 21-class mIoU counts it, unless ignore_background: on scenes that
    are mostly background its near-perfect IoU would lift the mean."""
    ious = [v for v in iou_per_class(conf)[1 if ignore_background else 0:] if not math.isnan(v)]
    return 100.0 * sum(ious) / len(ious) if ious else math.nan


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Percent of labeled pixels predicted right (NaN for an empty matrix)."""
    total = int(conf.sum())
    return 100.0 * int(conf.diag().sum()) / total if total else math.nan
