"""Pseudo-labels (Lee 2013; the hard-label baseline of Xie et al. 2020's noisy student): the control
of a transfer set. The student trains with cross-entropy alone, on the labeled images with their labels
and on the unlabeled ones with the teacher's argmax as the label. Against KD on the same images it
separates what the teacher's soft outputs add from what more images with its hard decisions add.
Without unlabeled images it is the CE control (with a teacher loaded for nothing)."""
import torch

from distill.base import Distiller
from distill.ce import CE_TERM


def pseudo_label_targets(targets: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The labels where there are labels (>= 0), the teacher's argmax where there are none (-1)."""
    return torch.where(targets >= 0, targets, teacher_logits.argmax(1))


class PseudoLabels(Distiller):
    name = "pl"

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, {CE_TERM: self.ce(logits.float(), pseudo_label_targets(y, teacher_out.logits))}
