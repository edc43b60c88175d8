"""Distillation losses as small pure functions. Each returns a dict of named terms; the trainer sums them."""
import torch
import torch.nn.functional as F


def ce_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """The control: the student alone, no teacher."""
    return {"ce": F.cross_entropy(student_logits, targets)}


def kd_loss(student_logits, teacher_logits, targets, temperature: float, alpha: float) -> dict:
    """Hinton et al. 2015: alpha * CE + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T), KL batch-mean."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return {"ce": alpha * F.cross_entropy(student_logits, targets), "kd": (1.0 - alpha) * t * t * kl}


def _binary(p: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """(p_target, p_non_target) per row."""
    pt = (p * target_mask).sum(dim=1, keepdim=True)
    return torch.cat([pt, (p * (1 - target_mask)).sum(dim=1, keepdim=True)], dim=1)


def dkd_loss(student_logits, teacher_logits, targets, alpha: float, beta: float, temperature: float) -> dict:
    """Decoupled KD (Zhao et al., CVPR 2022), as its reference code defines it: alpha*TCKD + beta*NCKD.

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


def distill_loss(cfg, student_logits, teacher_logits, targets, epoch: int) -> dict:
    """The loss of `cfg.method` at `epoch` (0-based); terms are summed by the trainer."""
    if cfg.method == "ce" or cfg.role == "teacher":
        return ce_loss(student_logits, targets)
    if cfg.method == "kd":
        return kd_loss(student_logits, teacher_logits, targets, cfg.temperature, cfg.alpha)
    warm = min(1.0, (epoch + 1) / max(1, cfg.dkd_warmup))  # linear warm-up of the DKD weight
    terms = dkd_loss(student_logits, teacher_logits, targets, cfg.dkd_alpha, cfg.dkd_beta, cfg.temperature)
    return {"ce": F.cross_entropy(student_logits, targets), **{k: warm * v for k, v in terms.items()}}
