"""cwd_loss: what a user relies on (zero at agreement, a softmax over locations per channel) and one
hand-written loop over channels to pin the paper's normalization (sum over locations, mean over N*C)."""
import pytest
import torch

from distill.cwd import cwd_loss


def _maps(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)


def test_zero_for_identical_positive_otherwise():
    s, t = _maps()
    assert cwd_loss(s, s.clone(), 4.0).abs().item() < 1e-6
    assert cwd_loss(s, t, 4.0).item() > 0


def test_invariant_to_a_per_channel_constant():
    s, t = _maps()
    shift = torch.randn(2, 3, 1, 1) * 10
    assert cwd_loss(s + shift, t - shift, 2.0).item() == pytest.approx(cwd_loss(s, t, 2.0).item(), rel=1e-5)


def test_equals_a_loop_over_channels():
    s, t = _maps(1)
    T = 3.0
    total = 0.0
    for n in range(s.shape[0]):
        for c in range(s.shape[1]):
            p = torch.softmax(t[n, c].flatten() / T, 0)
            log_q = torch.log_softmax(s[n, c].flatten() / T, 0)
            total += (p * (p.log() - log_q)).sum().item()
    expected = T * T * total / (s.shape[0] * s.shape[1])
    assert cwd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)


def test_gradients_finite_and_shapes_checked():
    s, t = _maps(2)
    s = (s * 50).requires_grad_()  # large logits: a softmax computed without log_softmax would overflow
    cwd_loss(s, t * 50, 1.0).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        cwd_loss(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2), 1.0)
