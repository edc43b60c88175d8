"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": the student matches the
teacher's temperature-softened class distribution, next to the true labels.

Which weight is which: here `alpha` weighs the cross-entropy term and `kd_weight` the T^2-scaled KL,
as mdistiller's CE_WEIGHT and KD_WEIGHT do (its CIFAR values 0.1 and 0.9 are the defaults). Other
code bases use one `alpha` for a convex mix and disagree on which term it weighs; check before copying
a number. With `kd_logit_std` both logits are z-scored first (Sun et al., CVPR 2024, "Logit
Standardization in Knowledge Distillation": the student matches the teacher's logit relations, not
their scale; their recipe uses T=2 and kd_weight=9). On --task=segment every labeled pixel is a row: pixel-wise
KD, the baseline of the segmentation papers (e.g. Shu et al. 2021; Liu et al., CVPR 2019, "Structured Knowledge
Distillation for Semantic Segmentation").
"""
import torch.nn.functional as F

from distill.base import Distiller
from distill.ce import CE_TERM
from utils.segmentation import pixel_rows


def standardize(logits, eps: float = 1e-7):
    """Per-row z-score (sample std, as the paper's code computes it)."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)


def soft_kl(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(p_teacher^T || p_student^T), batch-mean. T^2 keeps the soft term's gradients on the
    scale of the hard term's as T changes."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return t * t * kl


def kd_loss(student_logits, teacher_logits, targets, temperature: float, alpha: float, kd_weight: float,
            logit_std: bool = False, ce=F.cross_entropy) -> dict:
    """alpha * CE + kd_weight * soft_kl. `targets`: class indices, or soft targets (mixup); `ce` the
    cross-entropy to use (Distiller.ce skips a transfer set's unlabeled images)."""
    s, te = (standardize(student_logits), standardize(teacher_logits)) if logit_std else (student_logits, teacher_logits)
    return {CE_TERM: alpha * ce(student_logits, targets), "kd": kd_weight * soft_kl(s, te, temperature)}


class KD(Distiller):
    name = "kd"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.temperature, self.alpha, self.kd_weight = cfg.temperature, cfg.alpha, cfg.kd_weight
        self.logit_std = cfg.kd_logit_std

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        # a segmentation's labeled pixels are the rows: KL at T at every one (pixel-wise KD)
        s, y_rows, t = pixel_rows(logits.float(), y, teacher_out.logits)
        return logits, kd_loss(s, t, y_rows, self.temperature, self.alpha, self.kd_weight, self.logit_std, self.ce)
