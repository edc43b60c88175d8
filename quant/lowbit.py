"""Sub-8-bit weights with Brevitas: every Conv2d and Linear of a student becomes Brevitas's QuantConv2d /
QuantLinear, whose forward uses the weights rounded to the mode's grid and whose backward passes the
gradient straight through the rounding (STE) to the fp32 weights the optimizer keeps.

Scales are statistics of the weights, recomputed every forward (not learned parameters), so the packed
integers and scales are a function of the fp32 weights alone:
    int4           round(w / s) in -7..7, s = max |w| of the output channel / 7 (round-to-nearest)
    ternary        round(w / s) in -1..1, s = mean |w| of the output channel (|w| < s/2 becomes 0)
    binary         sign(w) in {-1, +1},   s = mean |w| of the output channel (XNOR-Net)
    8-bit edges    round(w / s) in -127..127, s = max |w| / 127
BatchNorm follows every conv and the hidden linear, so a channel's scale only sets its weights' shape.
"""
import brevitas.nn as qnn
from brevitas.core.function_wrapper import TensorClampSte
from brevitas.inject.enum import ScalingImplType, StatsOp
from brevitas.quant import Int8WeightPerChannelFloat, SignedBinaryWeightPerTensorConst, \
    SignedTernaryWeightPerTensorConst
from torch import nn

from quant import EDGE_BITS


# A channel's scale = its mean |w|, recomputed from the weights (not a parameter); the clamp returns a new
# tensor (Brevitas's default clamps the fp32 weights in place, which breaks autograd's saved copy).
MEAN_ABS_PER_CHANNEL = {"scaling_impl_type": ScalingImplType.STATS, "scaling_stats_op": StatsOp.AVE,
                        "scaling_per_output_channel": True, "tensor_clamp_impl": TensorClampSte}
BinaryWeight = SignedBinaryWeightPerTensorConst.let(**MEAN_ABS_PER_CHANNEL)
TernaryWeight = SignedTernaryWeightPerTensorConst.let(**MEAN_ABS_PER_CHANNEL)


# mode -> (Brevitas weight quantizer, bit width it is given, the packing codec of its integers)
WEIGHT_QUANT = {
    "int4": (Int8WeightPerChannelFloat, 4, "int4"),
    "ternary": (TernaryWeight, None, "trit"),
    "binary": (BinaryWeight, None, "sign"),
}
EDGE_QUANT = (Int8WeightPerChannelFloat, EDGE_BITS, "int8")


def _quant_layer(layer: nn.Module, spec) -> nn.Module:
    quantizer, bits, codec = spec
    kw = {"weight_quant": quantizer, **({"weight_bit_width": bits} if bits else {})}
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        new = qnn.QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                              layer.dilation, layer.groups, bias=bias, **kw)
    else:
        new = qnn.QuantLinear(layer.in_features, layer.out_features, bias=bias, **kw)
    new.weight.data.copy_(layer.weight.data)
    if bias:
        new.bias.data.copy_(layer.bias.data)
    new.codec = codec  # what quant/packing.py stores its integers as
    return new


def weight_layers(model: nn.Module) -> list:
    """(name, module) of every Conv2d and Linear (Brevitas's subclass them), in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def to_lowbit(model: nn.Module, mode: str) -> nn.Module:
    """Replace `model`'s Conv2d and Linear layers in place by Brevitas layers with `mode`'s weight grid; the
    first conv and the last linear get 8-bit weights. Returns the model (same parameter names)."""
    layers = weight_layers(model)
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    edges = {convs[0] if convs else None, linears[-1] if linears else None}
    for name, layer in layers:
        owner, _, attr = name.rpartition(".")
        parent = model.get_submodule(owner) if owner else model
        setattr(parent, attr, _quant_layer(layer, EDGE_QUANT if name in edges else WEIGHT_QUANT[mode]))
    return model
