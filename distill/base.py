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
from torch import nn

from config import method_hparams


@dataclass
class TeacherOut:
    """The frozen teacher's outputs for one batch: logits, and feature maps by module name when asked."""

    logits: torch.Tensor
    features: Optional[dict] = None


class Distiller(nn.Module):
    name = ""  # the method's name in config.METHODS and in the registry
    uses_teacher = True  # False: the CE control, no teacher is loaded
    teacher_layers: tuple = ()  # teacher modules whose outputs forward_train needs (feature methods)

    def __init__(self, student: nn.Module, cfg, teacher: Optional[nn.Module] = None,
                 input_shape: Optional[tuple] = None):
        """`teacher` and `input_shape` (C, H, W) let feature methods size their adapters; the teacher is
        never kept as a child module (it is not trained and not saved with the student)."""
        super().__init__()
        self.student = student
        self.mixup = cfg.mixup  # the Beta alpha of the batch mixup this method trains on (0 = none)
        self._hparams = method_hparams(cfg, self.name)

    @property
    def needs_features(self) -> bool:
        return bool(self.teacher_layers)

    def forward_train(self, x: torch.Tensor, y: torch.Tensor, teacher_out: Optional[TeacherOut],
                      epoch: int) -> tuple:
        """(student logits, {term name: scalar loss}) for one batch; `epoch` is 0-based."""
        raise NotImplementedError

    def forward(self, x, y, teacher_out, epoch):
        """forward_train, for DistributedDataParallel, which calls the module it wraps (torchrun runs)."""
        return self.forward_train(x, y, teacher_out, epoch)

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
