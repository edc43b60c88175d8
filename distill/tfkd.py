"""Teacher-free KD, its regularization form (Yuan et al., CVPR 2020, "Revisiting Knowledge Distillation via
Label Smoothing Regularization", Tf-KD_reg): KD from a hand-made virtual teacher that puts probability `prob`
on the true class and spreads the rest evenly, softened at a high temperature. No network teaches, so
nothing is loaded and nothing costs more than cross-entropy.

As the paper's code computes it: the virtual teacher's distribution is softmax(u / T) of that hand-made
vector u (prob 0.99, T 20-40 there), the student's log-probabilities are taken at T 1, and the KL is a
per-image mean (their KLDivLoss mean over N x K times a multiplier of about K); the loss is
(1 - w) * CE + w * KL, w 0.1 for ResNets."""
import torch
import torch.nn.functional as F

from distill.base import Distiller
from distill.ce import CE_TERM


def virtual_teacher(targets: torch.Tensor, num_classes: int, prob: float, temperature: float) -> torch.Tensor:
    """[N, K] probabilities: softmax(u / T), u = prob on the true class and (1 - prob) / (K - 1) elsewhere."""
    u = torch.full((targets.shape[0], num_classes), (1.0 - prob) / (num_classes - 1), device=targets.device)
    u.scatter_(1, targets[:, None], prob)
    return F.softmax(u / temperature, dim=1)


def tfkd_loss(student_logits, targets, weight: float, prob: float, temperature: float, ce=F.cross_entropy) -> dict:
    """(1 - weight) * CE + weight * KL(virtual teacher || student), batch mean."""
    p = virtual_teacher(targets, student_logits.shape[1], prob, temperature)
    kl = F.kl_div(F.log_softmax(student_logits, dim=1), p, reduction="batchmean")
    return {CE_TERM: (1.0 - weight) * ce(student_logits, targets), "tfkd": weight * kl}


class TeacherFreeKD(Distiller):
    name = "tfkd"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.weight, self.prob, self.temperature = cfg.tfkd_weight, cfg.tfkd_prob, cfg.tfkd_temperature

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, tfkd_loss(logits.float(), y, self.weight, self.prob, self.temperature, self.ce)
