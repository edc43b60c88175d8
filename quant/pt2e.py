"""int8 with torchao PT2E: the post-training static path (calibrated observers) and quantization-aware
training (fake-quantize modules in the exported graph), both with the X86InductorQuantizer (int8
per-channel weights, int8 per-tensor activations) and converted to the same q/dq program, which
torch.compile with freezing lowers to oneDNN int8 kernels (deploy/quantize.py).

A program file (.pt2) is written for deployment and read back only by the process that wrote it:
torch.export.load unpickles weights marked use_pickle and opaque constants, falls back to a
non-weights-only torch.load for a sample input it cannot read, and evaluates the shape expressions of
model.json with sympy, so a crafted archive runs code. Runs are rebuilt instead from their weights and
scales in safetensors (quant/students.py: model.int8.safetensors), through this module's own code."""
import io
import json
import warnings
import zipfile

import torch
from torch import nn

from utils.atomic import atomic_write_via
from utils.errors import UserError, first_line

MAX_BATCH = 1 << 16  # upper bound of the exported dynamic batch dimension


def dynamic_batch() -> tuple:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def x86_quantizer(qat: bool):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=qat))
    return quantizer


def export_graph(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The model as an ATen graph with a dynamic batch (what the PT2E quantizers annotate)."""
    return torch.export.export(model, (example,), dynamic_shapes=dynamic_batch()).module()


def ptq_prepared(model: nn.Module, example: torch.Tensor, calib=()) -> torch.fx.GraphModule:
    """Post-training static int8, before conversion: the graph with observers, calibrated on the batches of
    `calib` (none: their statistics come from a state dict, see rebuild). Its state dict (weights and the
    observers' ranges) is all that converting it needs."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    prepared = prepare_pt2e(export_graph(model, example), x86_quantizer(qat=False))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return prepared


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A prepared graph (observers or fake-quantize modules) -> its int8 q/dq graph; `prepared` is kept."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(copy.deepcopy(prepared))


def ptq_int8(model: nn.Module, example: torch.Tensor, calib) -> torch.fx.GraphModule:
    """Post-training static int8: observers calibrated on the batches of `calib`, converted to q/dq."""
    return convert(ptq_prepared(model, example, calib))


class Int8QAT(nn.Module):
    """A student's exported graph with torchao's QAT fake-quantize modules on weights and activations,
    trained like any nn.Module. train()/eval() switch the graph's BatchNorm and dropout ops (an exported
    graph has no modules to switch) and the observers: scales follow the data while training and stay
    fixed while evaluating. Intermediate feature maps are not reachable (no module hooks in a graph)."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        super().__init__()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        self.graph = prepare_qat_pt2e(export_graph(model, example), x86_quantizer(qat=True))
        self.example = example
        self.train()

    def train(self, mode: bool = True):
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.fake_quantize import disable_observer, enable_observer

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def convert(self) -> torch.fx.GraphModule:
        """The int8 q/dq graph of the current weights and scales (BatchNorm folded into the convs)."""
        self.eval()
        return convert(self.graph)


def _op(node: torch.fx.Node) -> str:
    """An ATen call's op name without overload or in-place mark: aten.relu_.default -> relu."""
    return getattr(node.target, "__name__", str(node.target)).split(".")[0].rstrip("_")


def op_precisions(quantized: torch.fx.GraphModule) -> dict:
    """{"int8": {op: count}, "float": {op: count}} of a converted q/dq graph, read from the graph itself: a conv or
    linear is int8 where its input and its weight both arrive through a dequantize of int8 (uint8) data, the
    pattern torch.compile's freezing lowers to an int8 oneDNN kernel; every other computing op (not a quantize
    or a dequantize) takes float tensors as the q/dq graph states it (a bilinear upsampling, which
    X86InductorQuantizer does not annotate, a cat of such a float input, a residual add)."""
    out = {"int8": {}, "float": {}}
    for node in quantized.graph.nodes:
        if not isinstance(node.target, torch._ops.OpOverload) or "quantize" in _op(node) or \
                (_op(node) == "dropout" and node.args[2:3] == (False,)):
            continue  # (a getitem, the guards' module call; an eval-mode dropout is the identity)
        ins = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        int8 = _op(node) in ("conv1d", "conv2d", "linear") and len(ins) == 2 and \
            all(a.op == "call_function" and _op(a).startswith("dequantize") for a in ins)
        kind = out["int8" if int8 else "float"]
        kind[_op(node)] = kind.get(_op(node), 0) + 1
    return out


def drop_unused_attributes(gm: torch.fx.GraphModule) -> int:
    """convert_pt2e leaves the original fp32 weights registered beside their int8 copies; without this
    the saved program would carry both. Returns how many tensors were dropped."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = 0
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, attr)
            dropped += 1
    return dropped


DEBUG_METADATA = ("stack_trace", "from_node", "torch_fn")  # provenance for debugging, not needed to run


def strip_debug_metadata(program: torch.export.ExportedProgram) -> None:
    """Drop per-node source provenance (file/line stack traces, the pass history of each node) before
    saving: torch.export.save writes it into the archive's model.json, where it was 0.12 MB of the res8
    student's 2.03 MB int8 artifact (0.31x -> 0.29x its fp32 bytes). Loading and compiling the program
    do not read it."""
    for node in program.graph_module.graph.nodes:
        for key in DEBUG_METADATA:
            node.meta.pop(key, None)


def int8_program(quantized: torch.fx.GraphModule, example: torch.Tensor) -> torch.export.ExportedProgram:
    """A converted q/dq graph as an exported program with a dynamic batch, without the fp32 weights
    convert_pt2e leaves behind and without debug provenance."""
    drop_unused_attributes(quantized)
    program = torch.export.export(quantized, (example,), dynamic_shapes=dynamic_batch())
    strip_debug_metadata(program)
    return program


def runnable(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The program as a module predict() can call .eval() on (an exported module refuses it otherwise)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    module = program.module()
    allow_exported_model_train_eval(module)
    return module


def int8_bits(program: torch.export.ExportedProgram) -> dict:
    """Bits per int8 weight and the bytes of every tensor the program holds, counted from it."""
    tensors = list(program.state_dict.values()) + list(program.constants.values())
    ints = [t for t in tensors if t.dtype == torch.int8]
    return {"bits_per_weight": 8.0 * sum(t.numel() * t.element_size() for t in ints) / max(1, sum(t.numel() for t in ints)),
            "packed_bytes": sum(t.numel() * t.element_size() for t in tensors)}


def write_int8_program(quantized: torch.fx.GraphModule, example: torch.Tensor, path) -> str:
    """A converted q/dq graph -> an exported program on disk (atomic); its path."""
    program = int8_program(quantized, example)
    return atomic_write_via(path, lambda f: torch.export.save(program, f))


def save_int8_program(quantized: torch.fx.GraphModule, example: torch.Tensor, path):
    """write_int8_program, then loaded back from the file this process has just written (deploy from the
    artifact, not from memory)."""
    path = write_int8_program(quantized, example, path)
    return path, load_program(path).module()


# what torch.export.load may unpickle: weights or constants flagged use_pickle, TorchScript and opaque objects
PICKLED_CONSTANTS = ("custom_obj_", "opaque_obj_")


def check_program_archive(path) -> None:
    """Refuse, before torch.export.load reads it, an archive that asks for anything but raw tensors: a
    weight or constant to unpickle, a custom or opaque object, a legacy pickled weights file, a sample
    input that weights-only loading cannot read. One line naming the file. (A guard for the files this
    project writes and reads back at once; it does not make a foreign program safe to load: model.json's
    shape expressions are still evaluated, which is why runs are never rebuilt from a .pt2.)"""
    path = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            configs = {n: z.read(n) for n in names if n.endswith(("weights_config.json", "constants_config.json"))}
            samples = {n: z.read(n) for n in names if "/sample_inputs/" in n}
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a torch.export program archive ({first_line(e)})") from None
    if not configs or not any(n.endswith("archive_format") for n in names):
        raise UserError(f"{path}: not a torch.export program archive (no weights config in it)")
    legacy = [n for n in names if n.endswith(".pt") and "/data/" in n and "/sample_inputs/" not in n]
    if legacy:
        raise UserError(f"{path}: refused, {legacy[0]} is a pickled weights file (legacy format), which "
                        f"loading would unpickle; this project never runs pickles")
    for name, raw in configs.items():
        try:
            entries = json.loads(raw)["config"]
            items = list(entries.items())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: damaged program archive ({name} is not a payload config)") from None
        for fqn, meta in items:
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False \
                    or str(meta.get("path_name", "")).startswith(PICKLED_CONSTANTS):
                raise UserError(f"{path}: refused, {str(fqn)[:60]} in {name.rsplit('/', 1)[-1]} is stored as a "
                                f"pickle or an opaque object, which loading would unpickle; this project never "
                                f"runs pickles")
    for name, raw in samples.items():  # torch.export.load retries a sample input it cannot read weights-only
        try:                             # with weights_only=False: never let it get there
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - whatever refuses it, refuse the archive
            raise UserError(f"{path}: refused, its sample input {name.rsplit('/', 1)[-1]} is not weights-only "
                            f"loadable ({first_line(e)[:80]}), and loading would unpickle it") from None


def load_program(path) -> torch.export.ExportedProgram:
    """torch.export.load of a q/dq program this process has just written (check_program_archive first), in
    any process: torchao's quantized_decomposed ops, which the program calls, are registered first (without
    them deserializing fails); without torch.export's warning about placing CPU-only weights ("No complete
    tensor found"). A torn or damaged archive is one line."""
    import torchao.quantization.pt2e  # noqa: F401 (registers the quantized_decomposed ops)

    check_program_archive(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found")
        try:
            return torch.export.load(path)
        except (RuntimeError, ValueError, KeyError, AssertionError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: damaged program archive ({first_line(e)})") from None
