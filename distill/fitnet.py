"""FitNets (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets"): a student stage, through a
trainable 1x1-conv + BN adapter, regresses the teacher's feature map at the same resolution (the
hint), next to cross-entropy; trained in one stage, as mdistiller does (hint weight 100 on CIFAR).

The adapter trains with the student (learnable_parameters), is saved in checkpoint.pt
(trainable_state) and is not part of the deployed student (model.safetensors)."""
import torch
import torch.nn.functional as F
from torch import nn

from distill.base import Distiller
from distill.ce import CE_TERM
from models.features import capture, feature_stages, nearest_stage, to_common_size
from utils.errors import UserError


def hint_loss(adapted, teacher_map) -> torch.Tensor:
    """Mean squared error between the adapted student map and the teacher's (pooled to a common size)."""
    a, t = to_common_size(adapted, teacher_map)
    return F.mse_loss(a, t)


class FitNet(Distiller):
    name = "fitnet"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        s_stages, t_stages = feature_stages(student, input_shape), feature_stages(teacher, input_shape)
        index = cfg.fitnet_stage if cfg.fitnet_stage >= 0 else len(s_stages) // 2
        if index >= len(s_stages):
            raise UserError(f"--fitnet_stage={cfg.fitnet_stage}: the student has {len(s_stages)} stages "
                            f"({', '.join(str(s.size) for s in s_stages)} px)")
        self.hint_from, self.hint_to = s_stages[index], nearest_stage(s_stages[index], t_stages)
        self.teacher_layers = (self.hint_to.name,)
        self.weight = cfg.fitnet_weight
        device = next(student.parameters()).device
        self.adapter = nn.Sequential(nn.Conv2d(self.hint_from.channels, self.hint_to.channels, 1, bias=False),
                                     nn.BatchNorm2d(self.hint_to.channels)).to(device)
        self._hparams.update(hint=f"student {self.hint_from.name} ({self.hint_from.channels} ch, "
                                  f"{self.hint_from.size} px) -> teacher {self.hint_to.name} "
                                  f"({self.hint_to.channels} ch, {self.hint_to.size} px)")

    def forward_train(self, x, y, teacher_out, epoch):
        with capture(self.student, [self.hint_from.name]) as maps:
            logits = self.student(x)
        adapted = self.adapter(maps[self.hint_from.name]).float()
        return logits, {CE_TERM: self.ce(logits.float(), y),
                        "hint": self.weight * hint_loss(adapted, teacher_out.features[self.hint_to.name])}
