"""Decoupled KD (Zhao et al., CVPR 2022): the KD loss split into a target-class term (TCKD) and a
non-target term (NCKD), weighted separately, after a linear warm-up; plus cross-entropy."""
import torch
import torch.nn.functional as F

from distill.base import Distiller
from distill.ce import CE_TERM
from distill.pl import pseudo_label_targets


def _binary(p: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """(p_target, p_non_target) per row."""
    pt = (p * target_mask).sum(dim=1, keepdim=True)
    return torch.cat([pt, (p * (1 - target_mask)).sum(dim=1, keepdim=True)], dim=1)


def dkd_loss(student_logits, teacher_logits, targets, alpha: float, beta: float, temperature: float) -> dict:
    """alpha*TCKD + beta*NCKD, as the reference code defines them.

    TCKD: KL between the binary (target, non-target) probabilities; NCKD: KL between the distributions
    over non-target classes (target logit masked by subtracting 1000 before the softmax). Each is a
    sum over the batch times T^2 / batch size.
    """
    t, n = temperature, student_logits.shape[0]
    mask = F.one_hot(targets, student_logits.shape[1]).to(student_logits.dtype)
    p_s = F.softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    b_s, b_t = _binary(p_s, mask), _binary(p_t, mask)
    tckd = (b_t * (torch.log(b_t) - torch.log(b_s))).sum() * t * t / n
    log_p_s_nt = F.log_softmax(student_logits / t - 1000.0 * mask, dim=1)
    p_t_nt = F.softmax(teacher_logits / t - 1000.0 * mask, dim=1)
    nckd = F.kl_div(log_p_s_nt, p_t_nt, reduction="sum") * t * t / n
    return {"tckd": alpha * tckd, "nckd": beta * nckd}


class DKD(Distiller):
    name = "dkd"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        # beta per depth: smaller students may want a gentler non-target term (the paper tunes beta per pair);
        # a timm student has no depth of the ResidualCNN family: dkd_beta
        per_depth = {} if cfg.student_arch else dict(cfg.dkd_beta_per_depth)
        self.beta = per_depth.get(cfg.blocks, cfg.dkd_beta)
        self.alpha, self.temperature = cfg.dkd_alpha, cfg.temperature
        self.warmup_epochs = cfg.dkd_warmup * cfg.epochs
        self._hparams["dkd_beta"] = self.beta  # the value this run used

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        s = logits.float()
        # linear warm-up of the DKD terms over the first dkd_warmup of the run (the paper: 20 of 240 epochs)
        warm = min(1.0, (epoch + 1) / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        # an unlabeled image (a transfer set's, label -1) splits target / non-target at the teacher's argmax
        target = pseudo_label_targets(y, teacher_out.logits) if self.transfer else y
        terms = dkd_loss(s, teacher_out.logits, target, self.alpha, self.beta, self.temperature)
        return logits, {CE_TERM: self.ce(s, y), **{k: warm * v for k, v in terms.items()}}
