"""FP8 training numerics (Micikevicius et al. 2022, "FP8 Formats for Deep Learning"), on any device.

Every nn.Conv2d and nn.Linear quantizes its weight and its input activation to float8_e4m3fn and the
gradient flowing back into its output to float8_e5m2, each with per-tensor dynamic scaling
(scale = format_max / amax, recomputed every call). Where FP8 tensor cores exist (CUDA capability
>= 8.9, e.g. H100) the 16-aligned Linear layers run as torchao's Float8Linear with real FP8 matmuls;
everything else is simulated: quantize to the real torch fp8 dtype (so rounding is the hardware
format's), dequantize, then the ordinary conv/linear in the input's dtype. Conversion is in place
and keeps every parameter name, so an fp8-trained state_dict loads into the plain fp32 model.
"""
import sys

import torch
from torch import nn
from torch.nn import functional as F

from utils.run_files import FP8_LAYERS

E4M3 = torch.float8_e4m3fn  # weights and activations: more mantissa, max 448
E5M2 = torch.float8_e5m2    # gradients: more range, max 57344
_FLT_MAX = torch.finfo(torch.float32).max


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def saturating_cast(x: torch.Tensor, dtype: torch.dtype = E4M3) -> torch.Tensor:
    """Clamp to the format's finite range, then cast, as hardware `satfinite` casts do. Unclamped, an
    out-of-range value becomes inf in e5m2 and, in e4m3fn (which has no inf), NaN on CUDA, while this torch's
    CPU cast saturates: clamping first makes every device agree and never overflows."""
    m = fp8_max(dtype)
    return x.clamp(-m, m).to(dtype)


def fp8_scale(x: torch.Tensor, dtype: torch.dtype = E4M3) -> torch.Tensor:
    """Per-tensor dynamic scale format_max / amax(|x|) as a float32 0-d tensor on x's device (no host sync).

    amax == 0 (or so small that max/amax overflows) gives the largest finite float32, which keeps zeros zero;
    an infinite amax gives 1, so finite values are still cast sensibly and infs saturate to +-max as a
    satfinite cast would. A NaN anywhere makes the scale NaN and so the whole output NaN (torchao does the
    same): divergence stays loud instead of being quantized away."""
    lo, hi = torch.aminmax(x)  # one pass; about 10x faster than vector_norm(ord=inf) on CPU
    amax = torch.maximum(hi, -lo).float()
    scale = (fp8_max(dtype) / amax).clamp(max=_FLT_MAX)
    return torch.where(torch.isinf(amax), torch.ones_like(scale), scale)


def _fp8_to_float(q: torch.Tensor) -> torch.Tensor:
    """Exact fp8 -> float32. On CPU torch decodes e4m3 element by element (~6x slower than the whole rest of
    the fake-quant), so there we reinterpret the bits: e4m3fn's 7 magnitude bits shifted left by 7 are an
    fp16 whose value is exactly 2**-8 times the e4m3 value, subnormals included. Only the NaN code (0x7f)
    decodes wrongly (to 480), which cannot matter: fp8_scale is NaN whenever the input held a NaN."""
    if q.dtype != E4M3 or q.device.type != "cpu":
        return q.float()
    h = (q.view(torch.int8).to(torch.int16) << 7) & -16385  # sign-extension sets bit 14; -16385 == ~0x4000
    return h.view(torch.float16).float().mul_(256.0)


def fp8_fake_quant(x: torch.Tensor, dtype: torch.dtype = E4M3) -> torch.Tensor:
    """Scale, saturating cast to `dtype`, dequantize. Same shape and dtype as x; plain forward math.

    Low-precision inputs (bf16/fp16) are scaled and dequantized in float32, as torchao does, then rounded back."""
    if x.numel() == 0:  # aminmax rejects empty tensors (e.g. a batch of 0)
        return x.clone()
    s = fp8_scale(x, dtype)
    m = fp8_max(dtype)
    q = (x * s if x.dtype == torch.float32 else x.float() * s).clamp_(-m, m).to(dtype)  # = saturating_cast
    return _fp8_to_float(q).div_(s).to(x.dtype)


class _QuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dtype):
        return fp8_fake_quant(x, dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None  # straight-through: the quantizer is treated as the identity


class _QuantizeGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return fp8_fake_quant(grad, ctx.dtype), None


def quantize_ste(x: torch.Tensor, dtype: torch.dtype = E4M3) -> torch.Tensor:
    """Fake-quantize in forward; the gradient passes through unchanged."""
    return _QuantizeSTE.apply(x, dtype)


def quantize_grad(x: torch.Tensor, dtype: torch.dtype = E5M2) -> torch.Tensor:
    """Identity in forward; fake-quantizes the incoming gradient (grad_output) in backward."""
    return _QuantizeGrad.apply(x, dtype)


class Fp8SimConv2d(nn.Conv2d):
    """nn.Conv2d with simulated FP8 numerics. Installed by swapping __class__, so parameters are untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(quantize_ste(x, E4M3), quantize_ste(self.weight, E4M3), self.bias)
        return quantize_grad(y, E5M2)


class Fp8SimLinear(nn.Linear):
    """nn.Linear with simulated FP8 numerics. Installed by swapping __class__, so parameters are untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(quantize_ste(x, E4M3), quantize_ste(self.weight, E4M3), self.bias)
        return quantize_grad(y, E5M2)


# Exact types only: subclasses (e.g. MultiheadAttention's out_proj, whose weight is used directly by
# F.multi_head_attention_forward) would not run our forward, and counting them would overclaim.
_SIMULATED = {nn.Conv2d: Fp8SimConv2d, nn.Linear: Fp8SimLinear}


def native_fp8_available(device) -> bool:
    """True where FP8 matmuls really run: CUDA, compute capability >= 8.9, torchao.float8 importable."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability(device) < (8, 9):
        return False
    try:
        import torchao.float8  # noqa: F401
    except Exception:
        return False
    return True


def _float8_config():
    from torchao.float8 import Float8LinearConfig
    # Tensorwise dynamic scaling, e4m3 input/weight, e5m2 grad_output (torchao's defaults = the paper's recipe).
    # pad_inner_dim: the grad_weight gemm's inner dim is the batch, which need not be a multiple of 16.
    return Float8LinearConfig(pad_inner_dim=True)


def _native_linear_filter(module: nn.Module, fqn: str) -> bool:
    # fqn == "": a root Linear would be replaced, not converted in place, so it stays simulated.
    return (type(module) is nn.Linear and fqn != ""
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def _float8_linear_class():
    # No model can hold a Float8Linear unless torchao.float8 was imported: don't pay its import on CPU.
    mod = sys.modules.get("torchao.float8.float8_linear")
    return getattr(mod, "Float8Linear", None)


def fp8_layer_counts(model: nn.Module) -> dict:
    """How many layers run FP8 numerics, and how: {"simulated": n, "native": m}."""
    native_cls = _float8_linear_class()
    mods = list(model.modules())
    sim = sum(isinstance(m, (Fp8SimConv2d, Fp8SimLinear)) for m in mods)
    native = sum(isinstance(m, native_cls) for m in mods) if native_cls is not None else 0
    return {"simulated": sim, "native": native}


def convert_to_fp8(model: nn.Module, device) -> str:
    """Convert `model` in place (before or after .to(device)); return an honest one-line description."""
    if native_fp8_available(device):
        from torchao.float8 import convert_to_float8_training
        convert_to_float8_training(model, module_filter_fn=_native_linear_filter, config=_float8_config())
    for m in model.modules():
        cls = _SIMULATED.get(type(m))
        if cls is not None:
            m.__class__ = cls
    counts = fp8_layer_counts(model)
    sim, native = counts["simulated"], counts["native"]
    how = "e4m3 weights+activations / e5m2 gradients, per-tensor dynamic scaling"
    if sim + native == 0:
        return "fp8: no Conv2d/Linear layers found, nothing converted (model runs in its own precision)"
    if native == 0:
        return f"fp8: simulated {how}, all {sim} conv/linear layers"
    return (f"fp8: {native} Linear native torchao Float8Linear, "
            f"{sim} conv/linear simulated (e4m3/e5m2, per-tensor dynamic scaling)")


def fp8_training(model: nn.Module, device) -> tuple:
    """The fp8 precision's model conversion (utils/precision_table.py names it): convert_to_fp8's description,
    and what the run's summary records, {FP8_LAYERS: {"simulated": n, "native": m}}."""
    description = convert_to_fp8(model, device)
    return description, {FP8_LAYERS: fp8_layer_counts(model)}
