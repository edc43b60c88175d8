"""The training engine: the epoch loop, evaluation, early stopping, optimizers and schedules; one code
path for every method and every precision.

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
from data.transforms import prepare_batch
from utils.errors import UserError

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
    from utils.device import import_bitsandbytes

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


@dataclass
class EpochStats:
    loss: float
    acc: float
    terms: dict = field(default_factory=dict)
    seconds: float = 0.0
    first_loss: float = math.nan  # the epoch's first batch: the reference for a loss that blows up


@dataclass
class Trainee:
    """One student's training step state: its distiller, optimizer, schedule and precision."""

    distiller: object  # distill.base.Distiller
    optimizer: torch.optim.Optimizer
    scheduler: object
    prec: object  # utils.precision.Precision


class _Meter:
    """Loss, accuracy and per-term sums accumulated on the device: no host sync per batch."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.terms, self.seen, self.first = {}, 0, None

    def add(self, loss, logits, y, terms) -> None:
        n = y.shape[0]
        if self.first is None:
            self.first = loss.detach().float().clone()
        self.loss += loss.detach() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v.detach() * n
        self.seen += n

    def stats(self, seconds: float) -> EpochStats:
        return EpochStats(self.loss.item() / self.seen, 100.0 * self.correct.item() / self.seen,
                          {k: v.item() / self.seen for k, v in self.terms.items()}, seconds,
                          self.first.item() if self.first is not None else math.nan)


def train_step(t: Trainee, batch, teacher_out, epoch: int):
    """One optimizer step of one student on one batch: (loss, logits, terms)."""
    with t.prec.autocast():
        logits, terms = t.distiller.forward_train(batch.x, batch.y, teacher_out, epoch)
        loss = sum(terms.values())
    t.prec.step(loss, t.optimizer)
    t.scheduler.step()
    return loss, logits, terms


def train_epoch(trainee: Trainee, sampler, teacher=None, epoch: int = 0, desc: str = "") -> EpochStats:
    """One pass of `sampler`'s batches. `teacher(batch)` gives the teacher's outputs (None: no teacher).
    The loop knows no method: the distiller turns (x, y, teacher outputs) into named loss terms."""
    trainee.distiller.train()
    meter = _Meter(sampler.data.images.device)
    t0 = time.perf_counter()
    bar = tqdm(total=sampler.steps, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    every = max(1, sampler.steps // POSTFIX_UPDATES)
    for step, batch in enumerate(sampler.epoch()):
        teacher_out = teacher(batch) if teacher is not None else None
        loss, logits, terms = train_step(trainee, batch, teacher_out, epoch)
        meter.add(loss, logits, batch.y, terms)
        bar.update(1)
        if (step + 1) % every == 0 or step + 1 == sampler.steps:
            bar.set_postfix(loss=f"{meter.loss.item() / meter.seen:.4f}",
                            acc=f"{100.0 * meter.correct.item() / meter.seen:.2f}%")
    bar.close()
    if meter.loss.device.type == "cuda":
        torch.cuda.synchronize(meter.loss.device)
    stats = meter.stats(time.perf_counter() - t0)
    if not math.isfinite(stats.loss):
        raise RunFailed(f"non-finite training loss at epoch {epoch + 1}: {trainee.prec.nonfinite_hint()}")
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
