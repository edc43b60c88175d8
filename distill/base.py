"""The Distiller: how one student learns, as a module that holds the student and anything else that
trains with it (an adapter), never the teacher. mdistiller's pattern, with the teacher's outputs passed
in (so they can come from a cache) and the training state and hyper-parameters made explicit.

The engine calls, per batch:  logits, terms = distiller.forward_train(x, y, teacher_out, epoch)
and sums the named terms (the log shows each). It optimizes `learnable_parameters()`, saves
`trainable_state()` in checkpoint.pt, and writes `hparams()` into every summary.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from config import method_hparams
from utils.names import METHODS, SEGMENT


@dataclass
class TeacherOut:
    """The frozen teacher's outputs for one batch: logits, and feature maps by module name when asked."""

    logits: torch.Tensor
    features: Optional[dict] = None


def labeled_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the images (or a segmentation's pixels) with a label (>= 0); a transfer set's
    unlabeled images (-1) add nothing, and a batch without a labeled image gives 0."""
    labeled = targets >= 0
    per_image = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    return (per_image * labeled).sum() / labeled.sum().clamp(min=1)


class Distiller(nn.Module):
    name = ""  # the method's name: its entry in the method table (utils/names.py)
    uses_teacher = True  # the table's `teacher`, set on each subclass it names (False: no teacher is loaded)
    teacher_layers: tuple = ()  # teacher modules whose outputs forward_train needs (feature methods)
    per_image = False  # the table's `per_image`: forward_train also takes idx, the batch's positions in the train split

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name in METHODS:
            cls.uses_teacher, cls.per_image = METHODS[cls.name].teacher, METHODS[cls.name].per_image

    def __init__(self, student: nn.Module, cfg, teacher: Optional[nn.Module] = None,
                 input_shape: Optional[tuple] = None):
        """`teacher` and `input_shape` (C, H, W) let feature methods size their adapters; the teacher is
        never kept as a child module (it is not trained and not saved with the student)."""
        super().__init__()
        self.student = student
        self.mixup = cfg.mixup  # the Beta alpha of the batch mixup this method trains on (0 = none)
        # a transfer set: the batch holds unlabeled images too (label -1), which no cross-entropy may read
        self.transfer = cfg.role == "student" and cfg.unlabeled_samples > 0
        # a segmentation: outputs [N, C, H, W], labels [N, H, W] whose unlabeled pixels carry -1 like such images
        self.dense = getattr(cfg, "task", "classify") == SEGMENT
        self._hparams = method_hparams(cfg, self.name)

    @property
    def needs_features(self) -> bool:
        return bool(self.teacher_layers)

    def forward_train(self, x: torch.Tensor, y: torch.Tensor, teacher_out: Optional[TeacherOut],
                      epoch: int) -> tuple:
        """(student logits, {term name: scalar loss}) for one batch; `epoch` is 0-based. A `per_image` method
        takes a fifth argument, idx: the batch's image positions in the train split."""
        raise NotImplementedError

    def forward(self, *args):
        """forward_train, for DistributedDataParallel, which calls the module it wraps (torchrun runs)."""
        return self.forward_train(*args)

    def ce(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the labels: the batch mean, or with a transfer set the mean over the batch's
        labeled images alone (0 when it has none), so an unlabeled image's label never reaches a loss."""
        if self.dense:  # the mean over the labeled pixels
            return labeled_cross_entropy(logits, targets)
        if not self.transfer or targets.dim() > 1:  # (soft targets: mixup, which a transfer set refuses)
            return F.cross_entropy(logits, targets)
        return labeled_cross_entropy(logits, targets)

    def learnable_parameters(self) -> list:
        """The student's parameters and any adapter's: what the optimizer trains."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict:
        """{'student': state dict, <adapter name>: state dict, ...}: everything checkpoint.pt must keep."""
        return {name: module.state_dict() for name, module in self.named_children()}

    def load_trainable_state(self, state: dict) -> None:
        for name, module in self.named_children():
            module.load_state_dict(state[name])

    def hparams(self) -> dict:
        """The method's hyper-parameters as they ran (summary.json, training_summary.txt, results.md)."""
        return dict(self._hparams)
