"""Each loss pinned to a value computed by hand (see the math.exp arithmetic in the comments)."""
import math

import pytest
import torch

from distill.ce import ce_loss
from distill.dkd import dkd_loss
from distill.kd import kd_loss

S = torch.tensor([[1.0, 2.0, 3.0]])
T_LOGITS = torch.tensor([[3.0, 2.0, 1.0]])
Y = torch.tensor([2])


def test_kd_pinned_small_case():
    # CE = -log softmax(s)[2] = 0.40760596; at T=2 KL(p_t || p_s) = 2 sinh(.5) / (1 + 2 cosh(.5)) = 0.32015667;
    # T^2 (1-a) KL = 4 * 0.5 * 0.32015667 = 0.64031334
    terms = kd_loss(S, T_LOGITS, Y, temperature=2.0, alpha=0.5, kd_weight=0.5)
    assert terms["ce"].item() == pytest.approx(0.20380298222219015, rel=1e-6)
    assert terms["kd"].item() == pytest.approx(0.6403133356596129, rel=1e-6)


def test_dkd_pinned_small_case():
    # binary (target, rest): teacher (0.18632, 0.81368), student (0.50648, 0.49352) at T=2 -> TCKD*T^2 = 0.88206
    # non-target distributions over classes {0,1}: teacher (0.62246, 0.37754), student (0.37754, 0.62246)
    terms = dkd_loss(S, T_LOGITS, Y, alpha=1.0, beta=8.0, temperature=2.0)
    assert terms["tckd"].item() == pytest.approx(0.8820576606449145, rel=1e-5)
    assert terms["nckd"].item() == pytest.approx(3.9186985984593408, rel=1e-5)


def test_ce_is_cross_entropy():
    assert ce_loss(S, Y)["ce"].item() == pytest.approx(-math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))))


def test_kl_zero_for_identical_logits():
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert kd_loss(z, z.clone(), y, 4.0, 0.0, 1.0)["kd"].abs().item() < 1e-6
    dkd = dkd_loss(z, z.clone(), y, 1.0, 8.0, 4.0)
    assert dkd["tckd"].abs().item() < 1e-5 and dkd["nckd"].abs().item() < 1e-5


def test_t_squared_scaling():
    # kd term / T^2 is the plain KL: doubling T at fixed KL multiplies the term by 4
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    T = 3.0
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1), reduction="batchmean")
    assert kd_loss(s, t, y, T, 0.0, 1.0)["kd"].item() == pytest.approx(T * T * kl.item(), rel=1e-5)
    # same KL, scaled logits: the T^2 factor is what keeps gradient magnitudes comparable
    assert kd_loss(2 * s, 2 * t, y, 2 * T, 0.0, 1.0)["kd"].item() == pytest.approx(4 * T * T * kl.item(), rel=1e-4)


def test_kd_batchmean_not_elementwise_mean():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    per_row = [kd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 4.0, 0.0, 1.0)["kd"] for i in range(4)]
    assert kd_loss(s, t, y, 4.0, 0.0, 1.0)["kd"].item() == pytest.approx(torch.stack(per_row).mean().item(), rel=1e-5)


def test_kd_weights_are_separate():
    # alpha weighs CE and kd_weight the soft term (mdistiller's CE_WEIGHT / KD_WEIGHT), not a convex mix
    a = kd_loss(S, T_LOGITS, Y, temperature=2.0, alpha=0.1, kd_weight=9.0)
    assert a["ce"].item() == pytest.approx(0.1 * 0.40760596444438, rel=1e-6)
    assert a["kd"].item() == pytest.approx(9.0 * 4 * 2 * math.sinh(0.5) / (1 + 2 * math.cosh(0.5)), rel=1e-5)


def test_kd_logit_standardization_pinned():
    # z-scores (sample std 1): student [-1, 0, 1], teacher [1, 0, -1]; at T=2 the log-ratio of the two
    # softmaxes is +1, 0, -1 per class, so KL = p_t[0] - p_t[2] = 2 sinh(0.5) / (1 + 2 cosh(0.5))
    kl = 2 * math.sinh(0.5) / (1 + 2 * math.cosh(0.5))  # 0.3201566...
    terms = kd_loss(S, T_LOGITS, Y, temperature=2.0, alpha=0.0, kd_weight=1.0, logit_std=True)
    assert terms["kd"].item() == pytest.approx(4 * kl, rel=1e-5)
    # invariant to the logits' scale and shift, which plain KD is not
    moved = kd_loss(5 * S + 3, T_LOGITS / 7 - 1, Y, temperature=2.0, alpha=0.0, kd_weight=1.0, logit_std=True)
    assert moved["kd"].item() == pytest.approx(4 * kl, rel=1e-4)


def test_fm_loss_pinned():
    from distill.fm import fm_loss

    # T=1: log p_t - log p_s = t - s per class (same normalizer) = 2, 0, -2; KL = 2 (p_t[0] - p_t[2])
    z = math.exp(3) + math.exp(2) + math.exp(1)
    expected = 2 * (math.exp(3) - math.exp(1)) / z  # 1.1504...
    assert fm_loss(S, T_LOGITS, 1.0)["kl"].item() == pytest.approx(expected, rel=1e-5)


def test_at_loss_pinned():
    from distill.at import at_loss

    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # attention maps [1,0,0,0] and [0,0,0,1] after normalizing
    t = torch.tensor([[[[0.0, 0.0], [0.0, 3.0]]]])
    assert at_loss([s], [t], 2.0).item() == pytest.approx(0.5)  # (1 + 1) / 4
    # a teacher map at twice the resolution is average-pooled to the student's first
    big = t.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert at_loss([s], [big], 2.0).item() == pytest.approx(0.5)


def test_hint_loss_pinned():
    from distill.fitnet import hint_loss

    assert hint_loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)).item() == pytest.approx(1.0)
    assert hint_loss(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 1, 2, 2)).item() == pytest.approx(4.0)
