"""int8 with torchao PT2E: the post-training static path (calibrated observers) and quantization-aware
training (fake-quantize modules in the exported graph), both with the X86InductorQuantizer (int8
per-channel weights, int8 per-tensor activations) and converted to the same q/dq program, which
torch.compile with freezing lowers to oneDNN int8 kernels (deploy/quantize.py)."""
import warnings

import torch
from torch import nn

from utils.atomic import atomic_write_via

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


def ptq_int8(model: nn.Module, example: torch.Tensor, calib) -> torch.fx.GraphModule:
    """Post-training static int8: observers calibrated on the batches of `calib`, converted to q/dq."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(export_graph(model, example), x86_quantizer(qat=False))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return convert_pt2e(prepared)


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
        import copy

        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        self.eval()
        return convert_pt2e(copy.deepcopy(self.graph))


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


def save_int8_program(quantized: torch.fx.GraphModule, example: torch.Tensor, path):
    """A converted q/dq graph -> an exported program on disk (atomic) -> loaded back from the file."""
    drop_unused_attributes(quantized)
    program = torch.export.export(quantized, (example,), dynamic_shapes=dynamic_batch())
    strip_debug_metadata(program)
    path = atomic_write_via(path, lambda f: torch.export.save(program, f))
    return path, load_program(path).module()  # deploy from the artifact, not from memory


def load_program(path) -> torch.export.ExportedProgram:
    """torch.export.load of a q/dq program, in any process: torchao's quantized_decomposed ops, which the
    program calls, are registered first (without them deserializing fails); without torch.export's warning
    about placing CPU-only weights ("No complete tensor found")."""
    import torchao.quantization.pt2e  # noqa: F401 (registers the quantized_decomposed ops)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No complete tensor found")
        return torch.export.load(path)
