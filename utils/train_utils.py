"""Epoch loops, optimizers, schedules and early stopping: the training path, one code path for every precision.

Batches are sliced from a uint8 tensor cache already on the device and augmented there; loss and
accuracy accumulate on the device, so there is no host sync per batch (the progress bar reads them
a few times per epoch).
"""
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from data.dataset import Split
from data.transforms import augment_batch, normalize
from utils.errors import UserError
from utils.losses import distill_loss

POSTFIX_UPDATES = 8  # progress-bar refreshes per epoch: each one syncs the device once
# pixels per evaluation batch on a CPU: res4/seed12 inference measured fastest at ~128-334 images of
# 28 px and ~8-16 of 150 px on the 2-core Xeon; 1024 x 150 px was 1.5-2.5x slower
CPU_EVAL_PIXELS = 200_000


class RunFailed(UserError):
    """A run that could not finish (non-finite loss, out of memory): recorded as failed, exit 1."""

    exit_code = 1


def build_optimizer(cfg, params):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    from utils.precision import import_bitsandbytes

    bnb = import_bitsandbytes()  # adam8bit: 8-bit optimizer state (Dettmers et al. 2022), CPU and CUDA

    return bnb.optim.Adam8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg, optimizer, steps_per_epoch: int):
    """Stepped once per batch: cosine to 0 over the run, x0.1 every lr_step_epochs, or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        factor = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    elif cfg.schedule == "step":
        factor = lambda s: 0.1 ** ((s // steps_per_epoch) // cfg.lr_step_epochs)
    else:
        factor = lambda s: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_batch(images_u8, mean, std, channels_last: bool) -> torch.Tensor:
    x = normalize(images_u8, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass
class EpochStats:
    loss: float
    acc: float
    terms: dict = field(default_factory=dict)
    seconds: float = 0.0


def train_epoch(cfg, model, data: Split, mean, std, prec, optimizer, scheduler, generator,
                epoch: int, teacher_fn=None, desc: str = "") -> EpochStats:
    """One pass over `data` in a seeded order. `teacher_fn(idx, x_u8, flips)` -> (x_u8, teacher logits)."""
    model.train()
    n, bs = len(data), cfg.batch_size
    steps = max(1, n // bs)  # drop the ragged last batch: BatchNorm1d needs more than one sample
    dev = data.images.device
    order = torch.randperm(n, generator=generator).to(dev)  # one copy per epoch, not one per batch
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    term_sums: dict = {}
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    every = max(1, steps // POSTFIX_UPDATES)
    for step in bar:
        idx = order[step * bs:(step + 1) * bs]
        x_u8, y = data.images[idx], data.labels[idx]
        if teacher_fn is not None:
            x_u8, t_logits = teacher_fn(idx, x_u8, generator)
        else:
            x_u8, t_logits = augment_batch(x_u8, cfg.augment, generator), None
        x = prepare_batch(x_u8, mean, std, cfg.channels_last)
        with prec.autocast():
            logits = model(x)
            terms = distill_loss(cfg, logits.float(), t_logits, y, epoch)
            loss = sum(terms.values())
        prec.step(loss, optimizer)
        scheduler.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        for k, v in terms.items():
            term_sums[k] = term_sums.get(k, 0.0) + v.detach() * y.shape[0]
        seen += y.shape[0]
        if (step + 1) % every == 0 or step + 1 == steps:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{100.0 * correct.item() / seen:.2f}%")
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    stats = EpochStats(loss_sum.item() / seen, 100.0 * correct.item() / seen,
                       {k: v.item() / seen for k, v in term_sums.items()}, time.perf_counter() - t0)
    if not math.isfinite(stats.loss):
        raise RunFailed(f"non-finite training loss at epoch {epoch + 1}: {prec.nonfinite_hint()}")
    return stats


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


class EarlyStopping:
    """Stop after `patience` epochs without a better metric; 0 disables it. Keeps the best epoch."""

    def __init__(self, patience: int, best: float = -math.inf, best_epoch: int = -1, bad_epochs: int = 0):
        self.patience, self.best, self.best_epoch, self.bad_epochs = patience, best, best_epoch, bad_epochs

    def update(self, metric: float, epoch: int) -> bool:
        """Record `metric` for `epoch`; True if it is the new best."""
        if metric > self.best:
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
