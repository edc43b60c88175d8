"""The epoch engine: the epoch loop, early stopping, optimizers and schedules; one code path for every
method and every precision. Evaluation on a split is runtime/inference.py's.

Batches are sliced from a uint8 tensor cache already on the device and augmented there; loss and
accuracy accumulate on the device, so there is no host sync per batch (the progress bar reads them
a few times per epoch).
"""
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch
from tqdm import tqdm

from runtime import torchrun
from utils.errors import UserError

POSTFIX_UPDATES = 8  # progress-bar refreshes per epoch: each one syncs the device once


class RunFailed(UserError):
    """A run that could not finish (non-finite loss, out of memory): recorded as failed, exit 1."""

    exit_code = 1


def build_optimizer(cfg, params, **extra):
    """The optimizer of cfg.optimizer; `extra` overrides keyword arguments (a captured step's tensor lr). Not fused:
    a fused SGD step was 1-6% faster alone on a 2-core AMD EPYC Zen 5 but within noise in the demo's sweep, and it
    changes the weights' rounding, so every seed's trajectory (one of the demo's fp32 res6 seeds turned negative)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **{"lr": cfg.lr, "weight_decay": cfg.weight_decay, **extra})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **{"lr": cfg.lr, "weight_decay": cfg.weight_decay, **extra})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, **{"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
                                          "nesterov": cfg.nesterov and cfg.momentum > 0, **extra})
    from utils.device import import_bitsandbytes

    bnb = import_bitsandbytes()  # adam8bit: 8-bit optimizer state (Dettmers et al. 2022), CPU and CUDA

    return bnb.optim.Adam8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg, steps_per_epoch: int):
    """step -> multiplier of cfg.lr: a linear warm-up over warmup_epochs, then cosine to 0 over the rest
    of the run, x0.1 every lr_step_epochs, or constant. Stepped once per batch."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(total, int(round(cfg.warmup_epochs * steps_per_epoch)))
    if cfg.schedule == "cosine":
        after = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s - warm, total - warm) / max(1, total - warm)))
    elif cfg.schedule == "step":
        after = lambda s: 0.1 ** ((s // steps_per_epoch) // cfg.lr_step_epochs)
    else:
        after = lambda s: 1.0
    return lambda s: (s + 1) / warm if s < warm else after(s)


def build_scheduler(cfg, optimizer, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))


@dataclass
class EpochStats:
    loss: float
    acc: float
    terms: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[BaseException] = None  # set when this student's run failed during the epoch
    first_loss: float = math.nan  # the epoch's first batch: the reference for a loss that blows up


class RngStream:
    """A run's own stream of the global torch RNG (dropout draws from it), swapped in around its steps so
    that students trained together draw exactly what each would alone. Captured at construction: right
    after the model, its method and any adapter were initialized. swap=False (a captured CUDA-graph step,
    whose replays draw from the shared generator): no swapping, and state() is the global stream's now."""

    def __init__(self, device):
        self.cuda = device if device.type == "cuda" else None
        self.swap = True
        self._save()

    def _save(self) -> None:
        self.cpu = torch.get_rng_state()
        self.gpu = torch.cuda.get_rng_state(self.cuda) if self.cuda else None

    def __enter__(self):
        if self.swap:
            torch.set_rng_state(self.cpu)
            if self.cuda:
                torch.cuda.set_rng_state(self.gpu, self.cuda)

    def __exit__(self, *exc):
        if self.swap:
            self._save()

    def state(self) -> dict:
        if not self.swap:
            self._save()
        return {"torch": self.cpu, **({"cuda": self.gpu} if self.cuda else {})}

    def load_state(self, state: dict) -> None:
        self.cpu = state["torch"]
        if self.cuda and state.get("cuda") is not None:
            self.gpu = state["cuda"] if torch.is_tensor(state["cuda"]) else state["cuda"][self.cuda.index or 0]
        if not self.swap:
            torch.set_rng_state(self.cpu)
            if self.gpu is not None:
                torch.cuda.set_rng_state(self.gpu, self.cuda)


class Trainee:
    """What the engine steps: a distiller (the method, which holds the student), its optimizer and
    schedule, its precision, the random stream its dropout draws from (a context manager; None: the
    global stream as it is), and what a step calls in place of distiller.forward_train (None: that
    method itself; under torchrun the distiller in DistributedDataParallel, with --cuda_graphs its
    compiled forward_train). runtime/training_run.TrainingRun is one, with its config and run files."""

    def __init__(self, distiller, optimizer: torch.optim.Optimizer, scheduler, prec, rng=None, forward=None):
        self.distiller, self.optimizer, self.scheduler, self.prec = distiller, optimizer, scheduler, prec
        self.rng, self.forward = rng, forward

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])


class _Meter:
    """Loss, accuracy and per-term sums accumulated on the device: no host sync per batch."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.labeled = torch.zeros((), device=device, dtype=torch.long)  # accuracy counts labeled images only
        self.terms, self.seen, self.seconds, self.error, self.first = {}, 0, 0.0, None, None

    def add(self, loss, logits, y, terms) -> None:
        n = y.shape[0]
        if self.first is None:
            self.first = loss.detach().float().clone()
        self.loss += loss.detach() * n
        self.correct += (logits.detach().argmax(1) == y).sum()  # an unlabeled image (-1) never matches
        self.labeled += (y >= 0).sum()
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v.detach() * n
        self.seen += n

    def stats(self, seconds: float) -> EpochStats:
        """The epoch's means; under torchrun over every rank's shard (the global batches)."""
        names = list(self.terms)
        seen = torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss.device)
        sums = torchrun.all_sum(torch.stack([self.loss.double(), self.correct.double(), seen,
                                                self.labeled.double(), *(self.terms[k].double() for k in names)])).cpu()
        loss, correct, seen, labeled = sums[0].item(), sums[1].item(), max(1.0, sums[2].item()), max(1.0, sums[3].item())
        return EpochStats(loss / seen, 100.0 * correct / labeled,
                          {k: sums[4 + i].item() / seen for i, k in enumerate(names)}, seconds, self.error,
                          self.first.item() if self.first is not None else math.nan)


def train_step(t: Trainee, batch, teacher_out, epoch: int):
    """One optimizer step of one student on one batch: (loss, logits, terms)."""
    with t.rng if t.rng is not None else nullcontext():
        with t.prec.autocast():
            forward = t.forward if t.forward is not None else t.distiller.forward_train
            per_image = (batch.idx,) if t.distiller.per_image else ()  # a method that keeps a state per image
            logits, terms = forward(batch.x, batch.targets, teacher_out, epoch, *per_image)
            loss = sum(terms.values())
        t.prec.step(loss, t.optimizer)
    t.scheduler.step()
    return loss, logits, terms


def train_epochs_together(trainees: list, sampler, teacher=None, epoch: int = 0, desc: str = "") -> list:
    """One pass of `sampler`'s batches, each batch made once and, with `teacher(batch)` (None: no
    teacher), the teacher's outputs once; every trainee steps on it. The loop knows no method: a
    distiller turns (x, targets, teacher outputs) into named loss terms. Returns one EpochStats per
    trainee; its seconds are its own steps plus an equal share of the shared work (batches, teacher).
    A student whose step raises, or whose loss is not finite, stops stepping and gets the error in its
    stats (`error`): the others go on, and the caller decides what a failure means."""
    for t in trainees:
        t.distiller.train()
    device = sampler.data.images.device
    meters = [_Meter(device) for _ in trainees]
    t0 = time.perf_counter()
    bar = tqdm(total=sampler.steps, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               **({} if torchrun.is_main() else {"disable": True}))  # TQDM_DISABLE=1 still applies
    every = max(1, sampler.steps // POSTFIX_UPDATES)
    for step, batch in enumerate(sampler.epoch()):
        teacher_out = teacher(batch) if teacher is not None else None
        for t, m in zip(trainees, meters):
            if m.error is not None:
                continue
            s0 = time.perf_counter()
            try:
                loss, logits, terms = train_step(t, batch, teacher_out, epoch)
            except (RuntimeError, ValueError) as e:  # out of memory, a numerics error: this student alone
                if torchrun.active():
                    raise  # the other ranks wait for this one's gradients: end the job (torchrun stops them)
                m.error = e
                continue
            m.add(loss, logits, batch.y, terms)
            m.seconds += time.perf_counter() - s0
        bar.update(1)
        if (step + 1) % every == 0 or step + 1 == sampler.steps:
            m = meters[0]
            bar.set_postfix(loss=f"{m.loss.item() / m.seen:.4f}",
                            acc=f"{100.0 * m.correct.item() / max(1, m.labeled.item()):.2f}%")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    shared = max(0.0, time.perf_counter() - t0 - sum(m.seconds for m in meters)) / len(trainees)
    out = []
    for t, m in zip(trainees, meters):
        stats = m.stats(m.seconds + shared)
        if stats.error is None and not math.isfinite(stats.loss):
            stats.error = RunFailed(f"non-finite training loss at epoch {epoch + 1}: {t.prec.nonfinite_hint()}")
        out.append(stats)
    return out


def train_epoch(trainee: Trainee, sampler, teacher=None, epoch: int = 0, desc: str = "") -> EpochStats:
    """train_epochs_together for one student; its failure is raised."""
    stats = train_epochs_together([trainee], sampler, teacher, epoch, desc)[0]
    if stats.error is not None:
        raise stats.error
    return stats


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
