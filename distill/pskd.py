"""Progressive self-knowledge distillation (Kim et al., ICCV 2021, PS-KD): the student is its own teacher. At
epoch t of E its target for an image is (1 - a_t) * one-hot + a_t * its own prediction for that image in the
previous epoch, with a_t = pskd_alpha * t / E (t = 1..E) growing linearly (the paper: 0.8 at the last epoch), and
the loss is cross-entropy against that soft target. The paper's gain is largest in calibration (ECE).

The previous epoch's predictions live in a per-image buffer (images x classes) that is part of the run's
trainable state, so checkpoint.pt keeps it and a resumed run continues from it. An image the previous epochs
never saw (the sampler drops a ragged last batch) falls back to its one-hot label."""
import torch
import torch.nn.functional as F
from torch import nn

from distill.base import Distiller
from distill.ce import CE_TERM


class PredictionBuffer(nn.Module):
    """The last softmax prediction per training image (row = its index in the train split), and which rows
    hold one. Grows to the largest index seen; loading a saved state takes that state's size."""

    def __init__(self):
        super().__init__()
        self.register_buffer("probs", torch.zeros(0, 0))
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))

    def _grow(self, rows: int, classes: int) -> None:
        """Room for `rows` images of `classes` classes (doubling); a new class count (the first call's) keeps none."""
        if rows <= len(self.seen) and classes == self.probs.shape[1]:
            return
        kept = len(self.seen) if classes == self.probs.shape[1] else 0
        rows = max(rows, 2 * len(self.seen))
        probs, seen = self.probs.new_zeros(rows, classes), self.seen.new_zeros(rows)
        if kept:
            probs[:kept], seen[:kept] = self.probs, self.seen
        self.probs, self.seen = probs, seen

    def read(self, idx: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """The stored predictions of these images; their one-hot labels where none is stored."""
        self._grow(int(idx.max()) + 1, one_hot.shape[1])
        return torch.where(self.seen[idx, None], self.probs[idx], one_hot)

    def write(self, idx: torch.Tensor, probs: torch.Tensor) -> None:
        self._grow(int(idx.max()) + 1, probs.shape[1])
        self.probs[idx] = probs.detach().float()
        self.seen[idx] = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("probs", "seen"):  # take the saved size, then load the values
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.seen.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def pskd_targets(one_hot: torch.Tensor, previous: torch.Tensor, alpha_t: float) -> torch.Tensor:
    return (1.0 - alpha_t) * one_hot + alpha_t * previous


class ProgressiveSelfKD(Distiller):
    name = "pskd"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.alpha, self.epochs = cfg.pskd_alpha, cfg.epochs
        self.memory = PredictionBuffer()

    def forward_train(self, x, y, teacher_out, epoch, idx=None):
        logits = self.student(x)
        s = logits.float()
        one_hot = F.one_hot(y, s.shape[1]).float()
        alpha_t = self.alpha * (epoch + 1) / self.epochs  # (epoch is 0-based) pskd_alpha at the last epoch
        target = pskd_targets(one_hot, self.memory.read(idx, one_hot), alpha_t)
        self.memory.write(idx, F.softmax(s.detach(), dim=1))
        return logits, {CE_TERM: F.cross_entropy(s, target)}
