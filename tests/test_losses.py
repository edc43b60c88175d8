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
    # CE = -log softmax(s)[2] = 0.40760596; p_s^T=2, p_t^T=2 -> KL = 0.16007833; T^2 (1-a) KL = 0.64031334
    terms = kd_loss(S, T_LOGITS, Y, temperature=2.0, alpha=0.5)
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
    assert kd_loss(z, z.clone(), y, 4.0, 0.0)["kd"].abs().item() < 1e-6
    dkd = dkd_loss(z, z.clone(), y, 1.0, 8.0, 4.0)
    assert dkd["tckd"].abs().item() < 1e-5 and dkd["nckd"].abs().item() < 1e-5


def test_t_squared_scaling():
    # kd term / T^2 is the plain KL: doubling T at fixed KL multiplies the term by 4
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    T = 3.0
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1), reduction="batchmean")
    assert kd_loss(s, t, y, T, 0.0)["kd"].item() == pytest.approx(T * T * kl.item(), rel=1e-5)
    # same KL, scaled logits: the T^2 factor is what keeps gradient magnitudes comparable
    assert kd_loss(2 * s, 2 * t, y, 2 * T, 0.0)["kd"].item() == pytest.approx(4 * T * T * kl.item(), rel=1e-4)


def test_kd_batchmean_not_elementwise_mean():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    per_row = [kd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 4.0, 0.0)["kd"] for i in range(4)]
    assert kd_loss(s, t, y, 4.0, 0.0)["kd"].item() == pytest.approx(torch.stack(per_row).mean().item(), rel=1e-5)
