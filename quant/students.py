"""A QAT student's life outside the training loop: built from the fp32 student it starts from, checked
before any data loads, exported to its deployable file at the end, loaded back from that file, and its
post-training (PTQ) contrast built from the same fp32 student.

Deployable files (in the run directory):
    int4 / ternary / binary  model.quant.safetensors (quant/packing.py): integers at their bit width
                             plus per-channel scales; unpacked to fp32 at load (no low-bit kernel here,
                             so no speed claim)
    int8                     model.int8.pt2: torchao's converted int8 program, the same format as the
                             int8 deploy variant; oneDNN int8 kernels once compiled with freezing. Written
                             for deployment, never loaded here (torch.export.load can run code from a
                             crafted archive): the run is rebuilt from model.int8.safetensors, the QAT
                             graph's weights and quantization scales, converted again by quant/pt2e.py
"""
import copy
import dataclasses
import os

import torch
from safetensors.torch import save as safetensors_bytes

from data.dataset import NATIVE_SIZE
from models.cnn_model import build_student
from quant import EDGE_NOTE, LOWBIT_MODES
from quant.ptq_file import read_ptq
from utils.atomic import atomic_write_json
from utils.checkpoint import load_weights_into, save_weights
from utils.errors import UserError
from utils.run_files import INT8_FILE, PTQ_DIR, PTQ_FILE, QUANT_FILE

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


def int8_state_path(path) -> str:
    """The safetensors file beside an int8 program (x.pt2 -> x.safetensors) that the model is rebuilt from."""
    return os.path.splitext(str(path))[0] + ".safetensors"


def write_int8(prepared: torch.nn.Module, converted, cfg, path, in_channels: int):
    """An int8 model's two files: the prepared graph's state (weights and quantization scales, safetensors)
    and the converted program for deployment (.pt2)."""
    from quant.pt2e import write_int8_program

    save_weights(prepared.state_dict(), int8_state_path(path))
    write_int8_program(converted, example_input(cfg, in_channels), path)


def rebuild_int8(cfg, path, in_channels: int, num_classes: int):
    """The int8 program of `path` rebuilt from its state file through this project's code: the fp32 student,
    exported and prepared as at training (QAT fake-quantize or PTQ observers), its weights and scales
    loaded (safetensors: tensors only), converted. The .pt2 itself is not read."""
    from quant.pt2e import Int8QAT, convert, int8_program, ptq_prepared

    state = int8_state_path(path)
    if not os.path.isfile(state):
        raise UserError(f"{path}: no {os.path.basename(state)} beside it to rebuild the int8 model from (a run "
                        f"made before program files stopped being loaded: they can carry pickled code); train "
                        f"the QAT run again with --overwrite=True")
    example = example_input(cfg, in_channels)
    student = build_student(cfg, in_channels, num_classes).eval()
    qat = cfg.qat == "int8"  # a QAT run's graph; otherwise the PTQ contrast of an fp32 run
    prepared = Int8QAT(student, example) if qat else ptq_prepared(student, example)
    # the graph's quantizers changed once (models/blocks.py: ReLU as modules, December 2026): a mismatch says so
    load_weights_into(prepared, state, f"the int8 res{cfg.blocks} student as built now (a run made before its graph "
                      f"fused each ReLU into its conv or add has other quantizers: train it again with "
                      f"--overwrite=True)")
    converted = prepared.convert() if qat else convert(prepared)
    return int8_program(converted, example)


def qat_student(cfg, model: torch.nn.Module, in_channels: int, init_weights=None) -> torch.nn.Module:
    """The fp32 student `model` (from `init_weights` when given) turned into its QAT form for cfg.qat."""
    if init_weights:
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
        write_int8(model, model.convert(), cfg, path, in_channels)
    rebuilt, how = load_deployed(cfg, path, in_channels, num_classes)
    return rebuilt, {"qat": cfg.qat, "qat_layers": EDGE_NOTE, "deploy_file": os.path.basename(path),
                     **file_bits(path, cfg.qat, rebuilt), "fp32_bytes": fp32_bytes, "deploy_how": how}


def file_bits(path: str, mode: str, model=None) -> dict:
    """Bits per weight, the weights' packed bytes (counted from the packed file, or from the int8 program
    `model` rebuilt from its state) and the deployable file's bytes."""
    if mode in LOWBIT_MODES:
        from quant.packing import weight_bits
        b = weight_bits(path)
        return {"bits_per_weight": b["bits_per_weight"], "packed_bytes": b["packed_bytes"] + b["scale_bytes"],
                "file_bytes": b["file_bytes"]}
    from quant.pt2e import int8_bits
    return {**int8_bits(model.program), "file_bytes": os.path.getsize(path)}


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
    from quant.pt2e import runnable
    program = rebuild_int8(cfg, path, in_channels, num_classes)
    model = runnable(program)  # predict() calls .eval()
    model.program = program  # what file_bits counts
    return model, deploy_how("int8")


def ptq_contrasts(init_dir: str, modes, evaluate, model, cfg, ds, calib) -> dict:
    """Post-training quantization of a finished fp32 student at each of `modes`, no training: round to
    nearest on the same grids as QAT (int8: torchao PT2E static, calibrated). Writes <init_dir>/ptq/<file>
    and <init_dir>/ptq.json; returns {mode: row}. `evaluate(model) -> test accuracy` measures each rebuilt file."""
    rows = read_ptq(init_dir)
    out_dir = os.path.join(init_dir, PTQ_DIR)
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
            from quant.pt2e import convert, ptq_prepared
            prepared = ptq_prepared(copy.deepcopy(model).eval(), example_input(cfg, ds.in_channels), calib)
            write_int8(prepared, convert(prepared), cfg, path, ds.in_channels)
        rebuilt, how = load_deployed(cfg, path, ds.in_channels, ds.num_classes, mode)
        rows[mode] = {"test_acc": evaluate(rebuilt), **file_bits(path, mode, rebuilt), "deploy_how": how,
                      "how": ("torchao PT2E static int8, calibrated" if mode == "int8" else
                              "round to nearest, per-channel scales") + f"; {EDGE_NOTE}"}
        atomic_write_json(os.path.join(init_dir, PTQ_FILE), rows)
    return rows
