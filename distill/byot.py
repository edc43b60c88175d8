"""BYOT, "Be Your Own Teacher" (Zhang et al., ICCV 2019): the student has a classifier at the end of every
stage (models/multi_exit.py) and its deepest exit teaches the shallower ones, so no other network is needed
and the shallow exits are smaller, faster classifiers trained for free. Per shallow exit i:
(1 - w) CE(q_i, y) + w T^2 KL(q_deep^T || q_i^T) + lambda ||f_i - f_deep||^2; the deepest exit: CE alone.
The deepest exit's outputs and features are targets (no gradient flows into them from the shallow terms).
Defaults from the authors' code: w 0.3, T 3, lambda 0.03 (its KL is a soft cross-entropy without T^2; the T^2
here keeps the soft term's gradients on the scale of the hard term's, as kd.py does)."""

from distill.base import Distiller
from distill.ce import CE_TERM
from distill.kd import soft_kl


def byot_loss(logits: list, feats: list, targets, weight: float, temperature: float, feature_weight: float,
              ce) -> dict:
    """The terms over every exit (lists shallow first, the deepest last)."""
    deep, deep_f = logits[-1].detach(), feats[-1].detach()
    shallow = list(zip(logits[:-1], feats[:-1]))
    zero = logits[-1].new_zeros(())
    return {CE_TERM: ce(logits[-1], targets) + sum(((1 - weight) * ce(q, targets) for q, _ in shallow), zero),
            "byot_kl": weight * sum((soft_kl(q, deep, temperature) for q, _ in shallow), zero),
            "byot_feat": feature_weight * sum(((f - deep_f).pow(2).sum(1).mean() for _, f in shallow), zero)}


class BeYourOwnTeacher(Distiller):
    name = "byot"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        if not hasattr(student, "exits"):
            raise TypeError(f"byot needs a multi-exit student (models/multi_exit.py), not {type(student).__name__}")
        self.weight, self.temperature = cfg.byot_weight, cfg.byot_temperature
        self.feature_weight = cfg.byot_feature_weight

    def forward_train(self, x, y, teacher_out, epoch):
        logits, feats = self.student.exits(x)
        return logits[-1], byot_loss([q.float() for q in logits], [f.float() for f in feats], y, self.weight,
                                     self.temperature, self.feature_weight, self.ce)
