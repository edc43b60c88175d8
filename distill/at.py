"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention"): at every
resolution both networks share, the student's spatial attention map (the channel mean of |A|^p,
flattened and L2-normalized) matches the teacher's; plus cross-entropy (mdistiller: weight 1000, p=2)."""
import torch.nn.functional as F

from distill.base import Distiller
from distill.ce import CE_TERM
from models.features import capture, feature_stages, same_size_pairs, to_common_size


def attention_map(features, p: float):
    return F.normalize(features.abs().pow(p).mean(1).flatten(1))


def at_loss(student_maps: list, teacher_maps: list, p: float):
    """Sum over stage pairs of the mean squared difference of the normalized attention maps."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        s, t = to_common_size(s, t)
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return total


class AttentionTransfer(Distiller):
    name = "at"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        pairs = same_size_pairs(feature_stages(student, input_shape), feature_stages(teacher, input_shape))
        if not pairs:
            from utils.errors import UserError
            raise UserError("--method=at: the student and the teacher share no feature-map resolution")
        self.student_layers = [s.name for s, _ in pairs]
        self.teacher_layers = tuple(t.name for _, t in pairs)
        self.weight, self.p = cfg.at_weight, cfg.at_p
        self._hparams.update(pairs=[f"{s.name}->{t.name} ({s.size} px)" for s, t in pairs])

    def forward_train(self, x, y, teacher_out, epoch):
        with capture(self.student, self.student_layers) as maps:
            logits = self.student(x)
        s_maps = [maps[n].float() for n in self.student_layers]
        t_maps = [teacher_out.features[n] for n in self.teacher_layers]
        return logits, {CE_TERM: self.ce(logits.float(), y), "at": self.weight * at_loss(s_maps, t_maps, self.p)}
