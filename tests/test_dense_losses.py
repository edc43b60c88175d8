"""The dense losses pinned to values worked out by hand on 2-pixel maps: pixel-wise KD (CE + KL at every labeled
pixel, an unlabeled one skipped) and CWD (a channel's softmax over its locations, KL averaged over N*C)."""
import math
from types import SimpleNamespace

import pytest
import torch

from config import make_config
from distill import build_distiller
from distill.cwd import cwd_loss

LN3 = math.log(3.0)
# KL([1/4, 3/4] || [1/2, 1/2]): the teacher's softmax of (0, ln 3) against the student's of (0, 0)
KL_QUARTER = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # 0.130812...


class Fixed(torch.nn.Module):
    """A 'student' whose output is the given map (and one parameter, for the optimizer's sake)."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.p = logits, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits + 0 * self.p


def test_pixel_wise_kd_is_ce_plus_kl_at_each_labeled_pixel():
    # 2 classes, 1x2 pixels: pixel 0 labeled 1, student (0, 0), teacher (0, ln 3); pixel 1 unlabeled (-1), where
    # student and teacher disagree wildly: counted, it would change both terms
    student = torch.tensor([[[[0.0, 9.0]], [[0.0, -9.0]]]])
    teacher = torch.tensor([[[[0.0, -9.0]], [[LN3, 9.0]]]])
    y = torch.tensor([[[1, -1]]])
    cfg = make_config(["--task=segment", "--dataset=fashion-mnist-scenes", "--method=kd", "--teacher_arch=resseg2_8",
                       "--temperature=1", "--alpha=1", "--kd_weight=1"])
    kd = build_distiller(cfg, Fixed(student))
    _, terms = kd.forward_train(torch.zeros(1, 1, 1, 2), y, SimpleNamespace(logits=teacher), 1)
    assert terms["ce"].item() == pytest.approx(math.log(2.0), rel=1e-6)  # -ln(1/2)
    assert terms["kd"].item() == pytest.approx(KL_QUARTER, rel=1e-5)
    cfg2 = make_config(["--task=segment", "--dataset=fashion-mnist-scenes", "--method=kd", "--teacher_arch=resseg2_8",
                        "--temperature=2", "--alpha=0.5", "--kd_weight=3"])
    _, terms = build_distiller(cfg2, Fixed(student)).forward_train(torch.zeros(1, 1, 1, 2), y,
                                                                   SimpleNamespace(logits=teacher), 1)
    p = 1 / (1 + math.sqrt(3))  # softmax of (0, ln 3 / 2): (1/(1+sqrt 3), sqrt 3/(1+sqrt 3))
    kl_t2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert terms["ce"].item() == pytest.approx(0.5 * math.log(2.0), rel=1e-6)
    assert terms["kd"].item() == pytest.approx(3 * 4 * kl_t2, rel=1e-5)  # weight x T^2 x KL


def test_cwd_is_t2_kl_over_locations_averaged_over_channels():
    # channel 0: teacher (0, ln 3) over the two locations, student (0, 0); channel 1: both (0, 0), KL 0
    student = torch.zeros(1, 2, 1, 2)
    teacher = torch.tensor([[[[0.0, LN3]], [[0.0, 0.0]]]])
    assert cwd_loss(student, teacher, 1.0).item() == pytest.approx(KL_QUARTER / 2, rel=1e-5)
    p = 1 / (1 + math.sqrt(3))
    kl_t2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert cwd_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl_t2 / 2, rel=1e-5)
    # the same maps with the channel on the other axis: a per-pixel softmax would see (0, 0) vs (0, ln 3) at the
    # second location only; CWD's per-channel softmax over locations gives the numbers above, not that
    per_pixel = torch.nn.functional.kl_div(torch.log_softmax(student[0, :, 0, 1], 0),
                                           torch.log_softmax(teacher[0, :, 0, 1], 0), reduction="sum", log_target=True)
    assert per_pixel.item() != pytest.approx(KL_QUARTER / 2, rel=1e-3)
