"""A QAT student's life outside the training loop: built from the fp32 student it starts from, checked
before any data loads, exported to its deployable file at the end, loaded back from that file, and its
post-training (PTQ) contrast built from the same fp32 student.

Deployable files (in the run directory):
    int4 / ternary / binary  model.quant.safetensors (quant/packing.py): integers at their bit width
                             plus per-channel scales; unpacked to fp32 at load (no low-bit kernel here,
                             so no speed claim)
    int8                     model.int8.pt2: torchao's converted int8 program, the same format as the
                             int8 deploy variant; oneDNN int8 kernels once compiled with freezing
"""
import copy
import dataclasses
import os

import torch
from safetensors.torch import save as safetensors_bytes

from data.dataset import NATIVE_SIZE
from models.cnn_model import build_student
from quant import EDGE_NOTE, LOWBIT_MODES
from quant.pt2e import load_program
from quant.table import PTQ_FILE, read_ptq
from utils.atomic import atomic_write_json
from utils.errors import UserError

QUANT_FILE = "model.quant.safetensors"
INT8_FILE = "model.int8.pt2"
NO_KERNEL = "unpacked to fp32 at load: no low-bit kernel here, no speed claim"
INT8_KERNEL = "torchao int8 program: oneDNN int8 kernels when compiled with freezing (evaluate.py --deploy=True times it)"


def deploy_how(mode: str) -> str:
    return NO_KERNEL if mode in LOWBIT_MODES else INT8_KERNEL


def deploy_file(mode: str) -> str:
    return QUANT_FILE if mode in LOWBIT_MODES else INT8_FILE


def example_input(cfg, in_channels: int, batch: int = 2) -> torch.Tensor:
    size = cfg.image_size or NATIVE_SIZE[cfg.dataset]
    return torch.zeros(batch, in_channels, size, size)


def resolve_qat_schedule(cfg):
    """A QAT run trains --qat_epochs epochs at --qat_lr (where set), in place of --epochs and --lr."""
    if cfg.qat == "none":
        return cfg
    return dataclasses.replace(cfg, epochs=cfg.qat_epochs or cfg.epochs, lr=cfg.qat_lr or cfg.lr)


def qat_student(cfg, model: torch.nn.Module, in_channels: int, init_weights=None) -> torch.nn.Module:
    """The fp32 student `model` (from `init_weights` when given) turned into its QAT form for cfg.qat."""
    if init_weights:
        from utils.checkpoint import load_weights_into
        load_weights_into(model, init_weights, f"the res{cfg.blocks} student of --init_from")
    if cfg.qat in LOWBIT_MODES:
        from quant.lowbit import to_lowbit
        return to_lowbit(model, cfg.qat)
    from quant.pt2e import Int8QAT
    return Int8QAT(model.eval(), example_input(cfg, in_channels))


def export(model, cfg, run_dir: str, in_channels: int, num_classes: int) -> tuple:
    """Write the deployable file of a QAT model (its current weights) -> (the model rebuilt from that
    file, summary fields). The caller measures the rebuilt model's accuracy."""
    path = os.path.join(run_dir, deploy_file(cfg.qat))
    plain = build_student(cfg, in_channels, num_classes)
    fp32_bytes = len(safetensors_bytes({k: v.contiguous() for k, v in plain.state_dict().items()}))
    if cfg.qat in LOWBIT_MODES:
        from quant.packing import write_packed
        write_packed(model, path, {"qat": cfg.qat, "note": EDGE_NOTE})
    else:
        from quant.pt2e import save_int8_program
        save_int8_program(model.convert(), example_input(cfg, in_channels), path)
    rebuilt, how = load_deployed(cfg, path, in_channels, num_classes)
    return rebuilt, {"qat": cfg.qat, "qat_layers": EDGE_NOTE, "deploy_file": os.path.basename(path),
                     **file_bits(path, cfg.qat), "fp32_bytes": fp32_bytes, "deploy_how": how}


def file_bits(path: str, mode: str) -> dict:
    """Bits per weight, the weights' packed bytes and the whole file's bytes, counted from the file."""
    if mode in LOWBIT_MODES:
        from quant.packing import weight_bits
        b = weight_bits(path)
        return {"bits_per_weight": b["bits_per_weight"], "packed_bytes": b["packed_bytes"] + b["scale_bytes"],
                "file_bytes": b["file_bytes"]}
    program = load_program(path)
    tensors = list(program.state_dict.values()) + list(program.constants.values())
    ints = [t for t in tensors if t.dtype == torch.int8]
    return {"bits_per_weight": 8.0 * sum(t.numel() * t.element_size() for t in ints) / max(1, sum(t.numel() for t in ints)),
            "packed_bytes": sum(t.numel() * t.element_size() for t in tensors), "file_bytes": os.path.getsize(path)}


def load_deployed(cfg, path: str, in_channels: int, num_classes: int, mode: str = "") -> tuple:
    """(model in eval mode, how it runs) rebuilt from a deployable file of `mode` (default cfg.qat) alone."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing; the QAT run did not finish its export")
    if (mode or cfg.qat) in LOWBIT_MODES:
        from quant.packing import unpack_state
        model = build_student(cfg, in_channels, num_classes)
        try:
            model.load_state_dict(unpack_state(path))
        except RuntimeError as e:
            raise UserError(f"{path}: does not fit the res{cfg.blocks} student ({str(e).splitlines()[0]})") from None
        return model.eval(), deploy_how(mode or cfg.qat)
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    model = load_program(path).module()
    allow_exported_model_train_eval(model)  # predict() calls .eval()
    return model, deploy_how("int8")


def ptq_contrasts(init_dir: str, modes, evaluate, model, cfg, ds, calib) -> dict:
    """Post-training quantization of a finished fp32 student at each of `modes`, no training: round to
    nearest on the same grids as QAT (int8: torchao PT2E static, calibrated). Writes <init_dir>/ptq/<file>
    and <init_dir>/ptq.json; returns {mode: row}. `evaluate(model) -> test accuracy` measures each rebuilt file."""
    rows = read_ptq(init_dir)
    out_dir = os.path.join(init_dir, "ptq")
    os.makedirs(out_dir, exist_ok=True)
    for mode in modes:
        if mode in rows:
            continue
        path = os.path.join(out_dir, f"{mode}.{deploy_file(mode).split('.', 1)[1]}")
        if mode in LOWBIT_MODES:
            from quant.lowbit import to_lowbit
            from quant.packing import write_packed
            write_packed(to_lowbit(copy.deepcopy(model), mode).eval(), path, {"ptq": mode, "note": EDGE_NOTE})
        else:
            from quant.pt2e import ptq_int8, save_int8_program
            example = example_input(cfg, ds.in_channels)
            save_int8_program(ptq_int8(copy.deepcopy(model).eval(), example, calib), example, path)
        rebuilt, how = load_deployed(cfg, path, ds.in_channels, ds.num_classes, mode)
        rows[mode] = {"test_acc": evaluate(rebuilt), **file_bits(path, mode), "deploy_how": how,
                      "how": ("torchao PT2E static int8, calibrated" if mode == "int8" else
                              "round to nearest, per-channel scales") + f"; {EDGE_NOTE}"}
        atomic_write_json(os.path.join(init_dir, PTQ_FILE), rows)
    return rows
