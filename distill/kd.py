"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": the student matches the
teacher's temperature-softened class distribution, next to the true labels."""
import torch.nn.functional as F

from distill.base import Distiller


def kd_loss(student_logits, teacher_logits, targets, temperature: float, alpha: float) -> dict:
    """alpha * CE + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T), KL batch-mean.
    T^2 keeps the soft term's gradients on the scale of the hard term's as T changes."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return {"ce": alpha * F.cross_entropy(student_logits, targets), "kd": (1.0 - alpha) * t * t * kl}


class KD(Distiller):
    name = "kd"

    def __init__(self, student, cfg, teacher=None):
        super().__init__(student, cfg, teacher)
        self.temperature, self.alpha = cfg.temperature, cfg.alpha

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, kd_loss(logits.float(), teacher_out.logits, y, self.temperature, self.alpha)
