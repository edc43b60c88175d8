"""Inference on a split: every image's logits in order, and their loss and accuracy. What evaluate.py,
deploy/, the teacher and a training run's evaluation share; nothing of the training loop."""
from contextlib import nullcontext

import torch

from data.dataset import Split
from data.transforms import prepare_batch

# pixels per evaluation batch on a CPU: res4/seed12 inference measured fastest at ~128-334 images of
# 28 px and ~8-16 of 150 px on the 2-core Xeon; 1024 x 150 px was 1.5-2.5x slower
CPU_EVAL_PIXELS = 200_000


@torch.no_grad()
def predict(model, data: Split, mean, std, batch_size: int, channels_last: bool, autocast=nullcontext):
    """Logits (float32, on the device) of every image, in order, in eval mode."""
    model.eval()
    if data.images.device.type == "cpu":  # big batches fall out of the CPU caches (2.5x slower at 150 px)
        batch_size = max(1, min(batch_size, CPU_EVAL_PIXELS // (data.images.shape[-1] * data.images.shape[-2])))
    out = []
    for i in range(0, len(data), batch_size):
        x = prepare_batch(data.images[i:i + batch_size], mean, std, channels_last)
        with autocast():
            out.append(model(x).float())
    return torch.cat(out) if out else torch.zeros(0)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple:
    """(mean cross-entropy, accuracy in percent)."""
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    acc = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    return loss, acc
