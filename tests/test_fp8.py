"""FP8 numerics: the quantizers round exactly as the hardware formats do, and a converted model trains."""
import copy

import pytest
import torch
from torch import nn

from models.cnn_model import ResidualCNN
from utils import fp8
from utils.fp8 import (E4M3, E5M2, convert_to_fp8, fp8_fake_quant, fp8_layer_counts, native_fp8_available,
                       quantize_grad, quantize_ste, saturating_cast)

FMT = [(E4M3, 448.0), (E5M2, 57344.0)]


def reference_fake_quant(x, dtype, fmax):
    s = fmax / x.abs().max()
    return (x * s).clamp(-fmax, fmax).to(dtype).float() / s


@pytest.mark.parametrize("dtype,fmax", FMT)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fake_quant_is_the_fp8_round_trip(dtype, fmax, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 33, generator=g) * 10 ** (seed - 1)
    y = fp8_fake_quant(x, dtype)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(y, reference_fake_quant(x, dtype, fmax))
    assert not torch.equal(y, x)  # it really quantizes
    i = x.abs().argmax()
    # The max element maps to +-amax (up to the one float32 rounding of `q / (fmax / amax)`).
    assert torch.sign(y.flatten()[i]) == torch.sign(x.flatten()[i])
    torch.testing.assert_close(y.flatten()[i], x.flatten()[i], rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("dtype,fmax", FMT)
def test_representable_values_are_unchanged(dtype, fmax):
    grid = (torch.randn(4096) * fmax / 8).clamp(-fmax, fmax).to(dtype).float()
    grid[0] = fmax  # amax = fmax: scale 1
    assert torch.equal(fp8_fake_quant(grid, dtype), grid)
    # A power-of-two amax gives a power-of-two scale: representable values still survive, max exactly.
    x = grid / 64
    assert torch.equal(fp8_fake_quant(x, dtype), x)


def test_max_maps_exactly_for_power_of_two_amax():
    x = torch.tensor([0.3, -2.0, 1.1])
    assert fp8_fake_quant(x)[1].item() == -2.0


@pytest.mark.parametrize("dtype,fmax", FMT)
def test_saturation_never_makes_inf_or_nan(dtype, fmax):
    x = torch.tensor([1e30, -3e38, 1.0, 0.0, 5e-3])
    y = fp8_fake_quant(x, dtype)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[1], x[1], rtol=1.2e-7, atol=0)  # max magnitude kept
    # A fixed scale far too large: the saturating cast clamps to +-max instead of overflowing.
    big = torch.tensor([1000.0, -1e6, float("inf"), -float("inf")]) * (fmax / 448.0)
    q = saturating_cast(big, dtype).float()
    assert torch.equal(q, torch.tensor([fmax, -fmax, fmax, -fmax]))


def test_unclamped_cast_overflows_where_the_saturating_one_does_not():
    # e5m2 has inf, so an unclamped cast of an out-of-range value gives inf; the clamp gives 57344.
    assert torch.isinf(torch.tensor([1e6]).to(E5M2).float()).all()
    assert saturating_cast(torch.tensor([1e6]), E5M2).float().item() == 57344.0
    # e4m3fn has no inf: out of range is NaN on CUDA (this CPU build saturates); clamped it is 448 everywhere.
    assert saturating_cast(torch.tensor([1000.0]), E4M3).float().item() == 448.0


def test_degenerate_inputs():
    assert fp8_fake_quant(torch.zeros(0, 3)).shape == (0, 3)
    assert torch.equal(fp8_fake_quant(torch.zeros(5)), torch.zeros(5))
    y = fp8_fake_quant(torch.tensor([1.0, float("inf"), -float("inf")]))
    assert y.tolist() == [1.0, 448.0, -448.0]  # scale 1, infs saturate
    assert torch.isnan(fp8_fake_quant(torch.tensor([1.0, float("nan")]))).all()  # divergence stays loud


def test_fp8_decode_is_exact_for_every_code():
    codes = torch.arange(256, dtype=torch.uint8).view(E4M3)
    finite = ~torch.isnan(codes.float())
    assert finite.sum().item() == 254
    assert torch.equal(fp8._fp8_to_float(codes)[finite], codes.float()[finite])


def test_low_precision_inputs():
    x = torch.randn(100).bfloat16()
    y = fp8_fake_quant(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, reference_fake_quant(x.float(), E4M3, 448.0).bfloat16())


def test_ste_passes_gradient_unchanged():
    x = torch.randn(50, requires_grad=True)
    g = torch.randn(50)
    y = quantize_ste(x)
    assert torch.equal(y.detach(), fp8_fake_quant(x.detach()))
    y.backward(g)
    assert torch.equal(x.grad, g)


def test_quantize_grad_fake_quantizes_the_gradient():
    x = torch.randn(50, requires_grad=True)
    g = torch.randn(50) * 1e-3
    y = quantize_grad(x)
    assert torch.equal(y.detach(), x.detach())
    y.backward(g)
    assert torch.equal(x.grad, fp8_fake_quant(g, E5M2))
    assert not torch.equal(x.grad, g)


def small_net():
    torch.manual_seed(0)
    return ResidualCNN(blocks=2, in_channels=1, num_classes=10).eval()


def n_conv_linear(model):
    return sum(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())


def test_converted_net_is_close_but_not_equal_and_trains():
    ref = small_net()
    n = n_conv_linear(ref)
    model = copy.deepcopy(ref)
    keys = list(model.state_dict())
    desc = convert_to_fp8(model, torch.device("cpu"))
    assert "simulated" in desc and f"all {n} conv/linear" in desc
    assert fp8_layer_counts(model) == {"simulated": n, "native": 0}
    assert list(model.state_dict()) == keys
    ref.load_state_dict(model.state_dict())  # fp8-trained weights load into the plain model

    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        a, b = ref(x), model(x)
    assert not torch.equal(a, b)
    assert ((b - a).norm() / a.norm()).item() < 0.1
    assert (a.argmax(1) == b.argmax(1)).float().mean().item() >= 0.9

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (64,)))
    opt.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    assert all(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))


def test_convert_then_change_dtype():
    model = small_net()
    convert_to_fp8(model, "cpu")
    model = model.to(torch.bfloat16)
    out = model(torch.randn(4, 1, 28, 28, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_no_native_fp8_on_cpu():
    assert native_fp8_available(torch.device("cpu")) is False
    assert native_fp8_available("cpu") is False


def test_native_path_keeps_keys(monkeypatch):
    """The torchao branch, run with torchao's CPU emulation: 16-aligned Linears go native, the rest simulated."""
    float8 = pytest.importorskip("torchao.float8")
    monkeypatch.setattr(fp8, "native_fp8_available", lambda device: True)
    monkeypatch.setattr(fp8, "_float8_config", lambda: float8.Float8LinearConfig(emulate=True, pad_inner_dim=True))
    model = small_net()
    n = n_conv_linear(model)
    keys = list(model.state_dict())
    desc = convert_to_fp8(model, "cpu")
    assert fp8_layer_counts(model) == {"simulated": n - 1, "native": 1}  # Linear(32, 16); Linear(16, 10) is not aligned
    assert desc.startswith("fp8: 1 Linear native torchao Float8Linear") and f"{n - 1} conv/linear simulated" in desc
    assert list(model.state_dict()) == keys
    model.train()
    model(torch.randn(10, 1, 28, 28)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
