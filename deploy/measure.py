"""Scores (accuracy, or mIoU and pixel accuracy for a segmentation), agreement and timing of variants, all in one
process on the same inputs.

Every variant sees only two batch shapes, 1 and 64 (the ragged last test batch is zero-padded to 64),
so a statically compiled graph is built twice and never recompiled while it is timed. Timing rounds
interleave the variants (round r times every variant once) so that load from other processes on a
shared machine drifts over all of them alike; each number is a median.
"""
import os
import statistics
import time

import torch

from data.transforms import prepare_batch
from deploy.common import Variant, first_line
from utils.device import cpu_flags, hardware_name

TIMING_BATCH = 64  # images per call for accuracy passes and the throughput number
WARMUP_CALLS = 3  # per shape, after compilation: caches, allocator, thread pools


def batches(images_u8, mean, std, channels_last: bool, batch: int = TIMING_BATCH):
    """(normalized batch padded to `batch`, number of real images) over the whole split, in order."""
    for i in range(0, len(images_u8), batch):
        chunk = images_u8[i:i + batch]
        n = chunk.shape[0]
        if n < batch:
            pad = torch.zeros((batch - n, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = torch.cat([chunk, pad])
        yield prepare_batch(chunk, mean, std, channels_last), n


@torch.inference_mode()
def predictions(variant: Variant, images_u8, mean, std, channels_last: bool) -> torch.Tensor:
    """Predicted class of every image (int64 [N]), or of every pixel of a segmentation ([N, H, W], uint8 where
    the classes fit: 8x less to hold per variant over a split of scenes), via the variant's run function."""
    out = []
    for x, n in batches(images_u8, mean, std, channels_last):
        y = variant.run(x)[:n].float()
        pred = y.argmax(1)
        out.append(pred.to(torch.uint8) if y.dim() == 4 and y.shape[1] <= 256 else pred)
    return torch.cat(out)


# the scores a row of deploy.json carries, by the labels' kind: one class per image, or a mask per image
IMAGE_SCORES = ("accuracy", "agreement")
PIXEL_SCORES = ("miou", "pixel_accuracy", "accuracy", "agreement")


def score_names(labels: torch.Tensor) -> tuple:
    return PIXEL_SCORES if labels.dim() == 3 else IMAGE_SCORES


def headline(labels: torch.Tensor) -> str:
    """The score the int8 targets and the teacher comparison judge: mIoU for masks (pixel accuracy is ~88% for
    labeling everything background), else accuracy."""
    return "miou" if labels.dim() == 3 else "accuracy"


def scores(pred: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, num_classes: int) -> dict:
    """A variant's test scores, in percent, from its predictions (`predictions`) and fp32's (`ref`).
    Classes per image: accuracy, and agreement (images where it predicts what fp32 predicts). Masks ([N, H, W],
    uint8, data.dataset.MASK_IGNORE on unlabeled pixels): mIoU (every class, background included) and pixel
    accuracy from one confusion matrix over the split, as runtime/inference.segment_scores scores a model
    (utils/segmentation.py), accuracy = pixel accuracy (as evaluation.json), and agreement over every pixel."""
    agree = 100.0 * (pred == ref).float().mean().item()
    if labels.dim() != 3:
        return {"accuracy": 100.0 * (pred == labels).float().mean().item(), "agreement": agree}
    from data.dataset import pixel_labels
    from utils.segmentation import confusion_matrix, mean_iou, pixel_accuracy

    conf = confusion_matrix(pred.long(), pixel_labels(labels), num_classes)
    acc = pixel_accuracy(conf)
    return {"miou": mean_iou(conf), "pixel_accuracy": acc, "accuracy": acc, "agreement": agree}


@torch.inference_mode()
def warm_up(variant: Variant, x1: torch.Tensor, x64: torch.Tensor) -> None:
    for x in (x1, x64):
        for _ in range(WARMUP_CALLS):
            variant.run(x)


def b64_repeats(repeats: int) -> int:
    return max(3, repeats // 5)


@torch.inference_mode()
def time_variants(variants: list, x1: torch.Tensor, x64: torch.Tensor, repeats: int) -> dict:
    """name -> (median ms per batch-1 call, median images/s at batch 64). Rounds interleave variants.

    Batch 1 is timed `repeats` times, batch 64 max(3, repeats // 5) times (one b64 call is ~64x the
    work, and the median of 10 is already stable)."""
    b1 = {v.name: [] for v in variants}
    b64 = {v.name: [] for v in variants}
    for v in variants:
        warm_up(v, x1, x64)
    for r in range(repeats):
        for v in variants:
            t0 = time.perf_counter()
            v.run(x1)
            b1[v.name].append(time.perf_counter() - t0)
        if r < b64_repeats(repeats):
            for v in variants:
                t0 = time.perf_counter()
                v.run(x64)
                b64[v.name].append(time.perf_counter() - t0)
    return {v.name: (1000.0 * statistics.median(b1[v.name]), x64.shape[0] / statistics.median(b64[v.name]))
            for v in variants}


def check_runs(variant: Variant, x1: torch.Tensor, shape: tuple) -> Variant:
    """One batch-1 call, which must give fp32's output `shape` ((1, classes), or (1, classes, H, W) for a
    segmentation); a variant that cannot run here becomes 'skipped' with the reason."""
    if variant.status != "ok":
        return variant
    try:
        with torch.inference_mode():
            y = variant.run(x1)
        if tuple(y.shape) != tuple(shape):
            raise RuntimeError(f"output shape {tuple(y.shape)}, expected {tuple(shape)}")
    except Exception as e:  # a backend that does not work on this machine: say so, never fake it
        variant.status, variant.run = "skipped", None
        variant.note = f"cannot run on this device: {first_line(e)}"
    return variant


def hardware() -> str:
    flags = cpu_flags()
    return f"{hardware_name(torch.device('cpu'))}; {os.cpu_count()} CPUs; ISA: {', '.join(flags) or 'unknown'}"


def file_size(path) -> int:
    return os.path.getsize(path) if path and os.path.isfile(path) else 0
