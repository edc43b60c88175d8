"""Quantized variants: int8 static (torchao PT2E + X86InductorQuantizer), fp8 weights, bitsandbytes heads."""
import contextlib

import torch
from safetensors.torch import load_file
from torch import nn

from deploy.common import BuildContext, Variant, skipped
from quant.pt2e import op_precisions, ptq_int8, save_int8_program
from utils.checkpoint import save_weights
from utils.fp8 import E4M3, fp8_max, saturating_cast
from utils.device import import_bitsandbytes

@contextlib.contextmanager
def inductor_freezing():
    """Inductor freezing (weights become constants: conv+BN folding, int8 weight prepacking), scoped."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        yield


def compiled(fn):
    """torch.compile with freezing and static shapes; every call runs inside the scoped config, so
    the compilations triggered by the first batch-1 and batch-64 calls see freezing on."""
    graph = torch.compile(fn, dynamic=False)

    def run(x):
        with inductor_freezing():
            return graph(x)

    return run


def int8_runner(loaded, how: str, compile: bool) -> tuple:
    """(callable, note) of a loaded int8 program: compiled with freezing, or the reference q/dq graph."""
    if compile:
        return compiled(loaded), f"{how}; torch.compile with freezing -> oneDNN int8 kernels"
    return loaded, f"{how}; NOT compiled: reference q/dq graph in fp32 (accuracy only, speed not int8)"


def build_int8(ctx: BuildContext) -> Variant:
    """Post-training static int8: export, X86InductorQuantizer (per-channel weights, per-tensor
    activations), calibrate on training images, convert, save the quantized program (.pt2), load it
    back and compile it with freezing (Inductor lowers q/dq patterns to int8 oneDNN kernels)."""
    example = ctx.example[:2].clone()  # the program stores its example input (clone: not the whole batch)
    quantized = ptq_int8(ctx.fresh_model(), example, ctx.calib)  # q/dq graph, weights folded to int8 constants
    ops = op_precisions(quantized)
    path, loaded = save_int8_program(quantized, example, ctx.path("int8.pt2"))
    how = (f"torchao PT2E static int8 (X86InductorQuantizer, per-channel weights, calibrated on {ctx.calib_images} "
           f"training images); {ops_line(ops)}")
    run, note = int8_runner(loaded, how, ctx.compile)
    return Variant("int8", run, path, note, facts={"ops": ops})


def ops_line(ops: dict) -> str:
    """'int8 ...: 14 conv2d; on float tensors: 4 add, 2 cat, ...' of quant.pt2e.op_precisions (compiled, a ReLU or
    a residual add becomes a post-op of the int8 conv before it; docs/deploy.md)."""
    def counts(kind):
        return ", ".join(f"{n} {op}" for op, n in sorted(ops[kind].items())) or "none"

    return f"int8 (uint8 activations, int8 weights): {counts('int8')}; on float tensors: {counts('float')}"


def fp8_state(state: dict) -> dict:
    """Conv/Linear weights (dim >= 2) -> float8_e4m3fn with a float32 scale per output channel;
    everything else (BN statistics, biases) stays as it is: a few hundred numbers per layer."""
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2:
            amax = v.abs().amax(dim=tuple(range(1, v.dim())), keepdim=True).float()
            scale = torch.where(amax > 0, amax / fp8_max(E4M3), torch.ones_like(amax))
            out[k] = saturating_cast(v.float() / scale, E4M3)
            out[k + ".fp8_scale"] = scale.flatten()
        else:
            out[k] = v
    return out


def dequantize_fp8_state(stored: dict) -> dict:
    state = {}
    for k, v in stored.items():
        if k.endswith(".fp8_scale"):
            continue
        if v.dtype == E4M3:
            scale = stored[k + ".fp8_scale"].view(-1, *([1] * (v.dim() - 1)))
            v = v.float() * scale
        state[k] = v
    return state


def build_fp8_weights(ctx: BuildContext) -> Variant:
    path = ctx.path("fp8-weights.safetensors")
    save_weights(fp8_state(ctx.model.state_dict()), path, {"format": "fp8-weights e4m3fn per-channel"})
    model = ctx.fresh_model()
    model.load_state_dict(dequantize_fp8_state(load_file(path)))
    note = ("weights stored float8_e4m3fn with a per-output-channel float32 scale, dequantized to fp32 "
            "at load; fp32 compute (storage format, not fp8 arithmetic)")
    return Variant("fp8-weights", model, path, note)


def _replace_linears(model: nn.Module, make) -> int:
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, make(child))
            count += 1
        else:
            count += _replace_linears(child, make)
    return count


def _bnb_linear(kind: str):
    bnb = import_bitsandbytes()

    def make(lin: nn.Linear) -> nn.Module:
        bias = lin.bias is not None
        w = lin.weight.detach().clone()
        if kind == "int8":
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=bias, has_fp16_weights=False,
                                      threshold=0.0)
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=bias, compute_dtype=torch.float32,
                                    quant_type="nf4")
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
        if bias:
            new.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        return new.to("cpu")  # the .to() is where bitsandbytes quantizes the weight

    return make


def build_bnb_head(ctx: BuildContext, kind: str) -> Variant:
    name = f"{kind}-head-bnb"
    try:
        bnb = import_bitsandbytes()
    except ImportError:
        return skipped(name, "bitsandbytes is not installed (pip install bitsandbytes)")
    model = ctx.fresh_model()
    n = _replace_linears(model, _bnb_linear(kind))
    if n == 0:
        return skipped(name, "the model has no nn.Linear layer to replace")
    path = ctx.path(f"{name}.safetensors")
    save_weights(model.state_dict(), path, {"format": name})
    layer = "Linear8bitLt (int8 row-wise absmax weights, threshold 0)" if kind == "int8" else \
        "Linear4bit (nf4 blockwise weights, fp32 compute)"
    note = f"bitsandbytes {bnb.__version__} {layer} for {n} Linear layer(s); convolutions stay fp32"
    return Variant(name, model, path, note)
