"""Channel-wise distillation (Shu et al., ICCV 2021, "Channel-Wise Knowledge Distillation for Dense
Prediction"): each channel of a dense map, here the segmentation logits [N, C, H, W], becomes a distribution
over its H*W locations, and the student matches the teacher's per channel. Pixel-wise KD (soft_kl on
pixel_rows) weighs every pixel alike; KL(teacher || student) over a channel's locations weighs them by the
teacher's probability, so the student learns most where the teacher's map of that class peaks (the salient
regions, the paper argues) and little from the rest.

The reference settings on segmentation logits (PSPNet R101 teacher, R18 student, Cityscapes, the logits
of the decode head at 1/8 of the input resolution), all with this normalization, T^2 * KL summed over
locations / (N * C):
- irfanICMLL/TorchDistiller, the authors' code: SemSeg-distill/utils/criterion.py (CriterionCWD, norm_type
  'channel', divergence 'kl'), weighted in networks/kd_model.py; its README runs
  `exp_cwd.sh channel kl 3 4 False False False`: loss weight 3, T = 4 (74.6-75.0 mIoU, it says).
- open-mmlab/mmrazor: mmrazor/models/losses/cwd.py (ChannelWiseDivergence), configs/distill/mmseg/cwd/
  cwd_logits_pspnet_r101_d8_pspnet_r18_d8_512x1024_cityscapes_80k.py: tau = 1, loss_weight = 5 (its README:
  75.54 mIoU against the student's 74.87 alone and the teacher's 79.76).
- pppppM/mmsegmentation-distiller (the authors' VOC and ADE20K code, linked from that README):
  configs/distiller/cwd/: weight 5, tau 1 on Cityscapes; weight 10, tau 1 on ADE20K.
The two Cityscapes settings disagree on T (4 against 1), so tune both on a new task; at T = 1 the T^2
factor is 1 and the weight alone sets the scale.
"""
import torch

from distill.base import Distiller
from distill.ce import CE_TERM
from distill.kd import soft_kl


def cwd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) between the two maps' per-channel softmaxes over locations at temperature
    T, summed over locations, averaged over the N*C (image, channel) pairs. It is soft_kl with the axes
    swapped: a row is one channel of one image, its distribution runs over H*W. Both maps [N, C, H, W], one
    shape (resize the teacher's first if the resolutions differ)."""
    if student_logits.dim() != 4 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"cwd_loss takes two [N, C, H, W] maps of one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    n, c, h, w = student_logits.shape
    return soft_kl(student_logits.reshape(n * c, h * w), teacher_logits.reshape(n * c, h * w), temperature)


class ChannelWiseKD(Distiller):
    """Cross-entropy on the labeled pixels (weight 1, as in the paper) plus cwd_weight x cwd_loss at
    cwd_temperature on the whole logit maps."""
    name = "cwd"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.weight, self.temperature = cfg.cwd_weight, cfg.cwd_temperature

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, {CE_TERM: self.ce(logits.float(), y),
                        "cwd": self.weight * cwd_loss(logits.float(), teacher_out.logits, self.temperature)}
