"""model.quant.safetensors: a low-bit student's weights at their bit width, the file whose bytes are its size.

For each quantized layer `<name>.weight` the file holds
    <name>.weight.packed   uint8: the integers, packed by the layer's codec
    <name>.weight.scale    float32, one per output channel: weight = integer x scale
and every other tensor of the model (BatchNorm, biases) as it is, in fp32. The metadata key "packing" maps
each packed weight to its codec and shape. Codecs:
    int8  one byte per weight (-127..127)
    int4  two weights per byte (-7..7, stored + 8 in a nibble)
    trit  five weights per byte (-1, 0, 1 as base-3 digits: 3^5 = 243 <= 256), 1.6 bits a weight
    sign  eight weights per byte (1 = +1, 0 = -1)
Nothing here needs Brevitas to read: a deployment unpacks to fp32 weights (`unpack_state`), or keeps the
integers for a kernel of its own.
"""
import json
import math
import os

import numpy as np
import torch
from safetensors import safe_open

from utils.checkpoint import save_weights
from utils.errors import UserError
from utils.run_files import QUANT_FILE


def pack(ints: torch.Tensor, codec: str) -> torch.Tensor:
    """Signed integers (any shape) -> a flat uint8 tensor."""
    v = ints.flatten().to(torch.int16).numpy()
    if codec == "int8":
        return torch.from_numpy(v.astype(np.int8).view(np.uint8).copy())
    if codec == "int4":
        u = (v + 8).astype(np.uint8)
        u = np.pad(u, (0, len(u) % 2))
        return torch.from_numpy((u[0::2] | (u[1::2] << 4)).astype(np.uint8))
    if codec == "trit":
        u = (v + 1).astype(np.uint16)
        u = np.pad(u, (0, (-len(u)) % 5)).reshape(-1, 5)
        return torch.from_numpy((u * np.array([1, 3, 9, 27, 81], dtype=np.uint16)).sum(1).astype(np.uint8))
    if codec == "sign":
        return torch.from_numpy(np.packbits(v > 0))
    raise ValueError(f"unknown codec {codec}")


def unpack(packed: torch.Tensor, codec: str, shape) -> torch.Tensor:
    """The inverse of `pack`: a float32 tensor of integers of `shape`."""
    n, u = math.prod(shape), packed.numpy()
    if codec == "int8":
        v = u.view(np.int8).astype(np.float32)
    elif codec == "int4":
        v = np.stack([u & 15, u >> 4], 1).flatten().astype(np.float32) - 8
    elif codec == "trit":
        digits, rest = [], u.astype(np.int16)
        for _ in range(5):
            digits.append(rest % 3)
            rest = rest // 3
        v = np.stack(digits, 1).flatten().astype(np.float32) - 1
    elif codec == "sign":
        v = np.unpackbits(u).astype(np.float32) * 2 - 1
    else:
        raise ValueError(f"unknown codec {codec}")
    return torch.from_numpy(v[:n].copy()).reshape(shape)


def quant_layers(model) -> list:
    """(name, layer) of the Brevitas layers quant/lowbit.py made (they carry their codec)."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "codec") and hasattr(m, "quant_weight")]


def write_packed(model, path, metadata: dict = None) -> int:
    """Pack a Brevitas student's weights (as its forward uses them) into `path`; returns the file's bytes."""
    state = {k: v.detach().float() for k, v in model.state_dict().items() if "weight_quant" not in k}
    packing = {}
    with torch.no_grad():
        for name, layer in quant_layers(model):
            q = layer.quant_weight()
            key = f"{name}.weight"
            ints = q.int().cpu()
            state.pop(key)
            state[key + ".packed"] = pack(ints, layer.codec)
            state[key + ".scale"] = q.scale.detach().float().flatten().cpu()
            packing[key] = {"codec": layer.codec, "shape": list(ints.shape)}
    return save_weights(state, path, {**(metadata or {}), "packing": json.dumps(packing)})


def read_packed(path) -> tuple:
    """(tensors, packing, metadata) of a model.quant.safetensors; one clear line if it is not one."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, Exception) as e:  # noqa: BLE001 - safetensors raises its own error types
        raise UserError(f"{path}: cannot read a packed model ({str(e).splitlines()[0] if str(e) else e})") from None
    if "packing" not in meta:
        raise UserError(f"{path}: no 'packing' metadata; not a {QUANT_FILE}")
    try:
        packing = json.loads(meta["packing"])
        why = packing_defect(packing, tensors)
    except json.JSONDecodeError as e:
        why = f"not JSON: {e.msg}"
    if why:
        raise UserError(f"{path}: damaged 'packing' metadata ({why})") from None
    return tensors, packing, meta


WEIGHTS_PER_BYTE = {"int8": 1, "int4": 2, "trit": 5, "sign": 8}


def packing_defect(packing, tensors: dict):
    """Why the 'packing' metadata does not describe the file's tensors (a codec, a shape of whole numbers, the
    packed bytes that shape needs, one scale per output channel), or None."""
    if not isinstance(packing, dict):
        return f"a JSON {type(packing).__name__}, not an object"
    for key, p in packing.items():
        codec, shape = (p.get("codec"), p.get("shape")) if isinstance(p, dict) else (None, None)
        if codec not in WEIGHTS_PER_BYTE:
            return f"{key}: codec {json.dumps(codec)[:30]}, not one of {', '.join(WEIGHTS_PER_BYTE)}"
        if not isinstance(shape, list) or not shape or not all(type(d) is int and d > 0 for d in shape):
            return f"{key}: shape {json.dumps(shape)[:30]}, not a list of positive whole numbers"
        packed, scale = tensors.get(key + ".packed"), tensors.get(key + ".scale")
        if packed is None or scale is None:
            return f"{key}: no {key}.packed and {key}.scale tensors in the file"
        need = -(-math.prod(shape) // WEIGHTS_PER_BYTE[codec])
        if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != need:
            return f"{key}: {shape} {codec} weights need {need} packed bytes, the file holds {packed.numel()}"
        if scale.numel() != shape[0]:
            return f"{key}: {scale.numel()} scales for {shape[0]} output channels"
    return None


def unpack_state(path) -> dict:
    """A plain fp32 state dict (the unquantized model's keys) from a packed file: integers x scales."""
    tensors, packing, _ = read_packed(path)
    state = {k: v for k, v in tensors.items() if not k.endswith((".packed", ".scale"))}
    for key, p in packing.items():
        ints = unpack(tensors[key + ".packed"], p["codec"], p["shape"])
        scale = tensors[key + ".scale"].view(-1, *([1] * (len(p["shape"]) - 1)))
        state[key] = ints * scale
    return state


def weight_bits(path) -> dict:
    """Counted from the file itself: packed weights, their bytes and bits per weight; all bytes of the file."""
    tensors, packing, _ = read_packed(path)
    n = sum(math.prod(p["shape"]) for p in packing.values())
    packed = sum(tensors[k + ".packed"].numel() for k in packing)
    scales = sum(tensors[k + ".scale"].numel() * 4 for k in packing)
    return {"weights": n, "packed_bytes": packed, "bits_per_weight": 8.0 * packed / max(1, n),
            "scale_bytes": scales, "file_bytes": os.path.getsize(path)}
