"""Inference on a split: every image's logits in order, and their loss and accuracy. What evaluate.py,
deploy/, the teacher and a training run's evaluation share; nothing of the training loop."""
from contextlib import nullcontext

import torch

from data.dataset import Split
from data.transforms import prepare_batch
from models.fold import folded_for_eval

# pixels per evaluation batch on a CPU: res4/seed12 inference measured fastest at ~128-334 images of
# 28 px and ~8-16 of 150 px on the 2-core Xeon; 1024 x 150 px was 1.5-2.5x slower
CPU_EVAL_PIXELS = 200_000


def eval_batch(data: Split, batch_size: int) -> int:
    """The evaluation batch: on a CPU at most CPU_EVAL_PIXELS pixels (big batches fall out of the CPU caches:
    2.5x slower at 150 px)."""
    if data.images.device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_EVAL_PIXELS // (data.images.shape[-1] * data.images.shape[-2])))


@torch.no_grad()
def predict(model, data: Split, mean, std, batch_size: int, channels_last: bool, autocast=nullcontext):
    """Logits (float32, on the device) of every image, in order, in eval mode; a residual student with its
    BatchNorms folded into its convs (models/fold.py: the same function, 5-12% faster)."""
    model.eval()
    model = folded_for_eval(model)
    batch_size = eval_batch(data, batch_size)
    out = []
    for i in range(0, len(data), batch_size):
        x = prepare_batch(data.images[i:i + batch_size], mean, std, channels_last)
        with autocast():
            out.append(model(x).float())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def segment_scores(model, data: Split, mean, std, batch_size: int, channels_last: bool, num_classes: int,
                   autocast=nullcontext) -> dict:
    """A segmentation's scores on a split, batch by batch (its logit maps are never all held: [N, C, H, W] floats
    are C x 4 bytes a pixel): loss (mean cross-entropy over the labeled pixels, their NLL), acc (pixel accuracy),
    miou and the per-class iou, in percent, from one confusion matrix over the split (utils/segmentation.py)."""
    from data.dataset import pixel_labels
    from utils.segmentation import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy

    model.eval()
    batch_size = eval_batch(data, batch_size)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=data.images.device)
    nll = torch.zeros((), dtype=torch.float64, device=data.images.device)
    for i in range(0, len(data), batch_size):
        x = prepare_batch(data.images[i:i + batch_size], mean, std, channels_last)
        y = pixel_labels(data.labels[i:i + batch_size])
        with autocast():
            logits = model(x).float()
        nll += torch.nn.functional.cross_entropy(logits, y, ignore_index=-1, reduction="sum").double()
        conf += confusion_matrix(logits.argmax(1), y, num_classes)
    labeled = max(1, int(conf.sum()))
    return {"loss": nll.item() / labeled, "acc": pixel_accuracy(conf), "miou": mean_iou(conf),
            "iou": [None if v != v else 100.0 * v for v in iou_per_class(conf)]}  # (NaN: a class seen nowhere)


@torch.no_grad()
def label_maps(model, images: torch.Tensor, mean, std) -> torch.Tensor:
    """A segmenter's argmax label maps [N, H, W] of uint8 `images` [N, C, H, W], on the CPU in eval mode (the few
    scenes a picture shows)."""
    return model.cpu().eval()(prepare_batch(images.cpu(), mean, std, False)).float().argmax(1)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple:
    """(mean cross-entropy, accuracy in percent). The mean cross-entropy is the negative log-likelihood that
    calibration reports beside the ECE."""
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    acc = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (ICML 2017) and PS-KD (Kim et al. 2021) report ECE


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """The images split by their top-class softmax confidence into `bins` equal-width bins ((0, 1/bins], ...,
    ((bins-1)/bins, 1]): per bin the image count, the sum of confidences and the number right (a reliability
    diagram's data: summary.json's test_calibration_bins)."""
    conf, pred = logits.float().softmax(1).max(1)
    where = (conf * bins).ceil().long().clamp(1, bins) - 1
    sums = torch.zeros(3, bins, dtype=torch.float64, device=conf.device)
    for row, values in enumerate((torch.ones_like(conf), conf, (pred == labels).float())):
        sums[row].index_add_(0, where, values.double())
    count, confidence, correct = sums.cpu().tolist()
    return {"bins": bins, "count": [int(c) for c in count], "confidence": confidence, "correct": correct}


def calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error in percent (Guo et al. 2017): over the confidence bins of calibration_bins,
    the image-weighted mean of |accuracy - mean confidence|. 0 for a perfectly calibrated model; NaN for no
    images."""
    return ece_of(calibration_bins(logits, labels, bins))


def ece_of(b: dict) -> float:
    """The expected calibration error in percent of calibration_bins' counts (NaN for no images)."""
    n = sum(b["count"])
    return 100.0 * sum(abs(right - conf) for right, conf in zip(b["correct"], b["confidence"])) / n if n \
        else float("nan")
