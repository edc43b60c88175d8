"""The control: the student trained alone with cross-entropy, no teacher (also how a teacher is trained)."""

import torch.nn.functional as F

from distill.base import Distiller

CE_TERM = "ce"  # the cross-entropy term's name in every method's terms (history.json: train_ce)


def ce_loss(student_logits, targets, ce=F.cross_entropy) -> dict:
    return {CE_TERM: ce(student_logits, targets)}


class CE(Distiller):
    name = "ce"

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, ce_loss(logits.float(), y, self.ce)
