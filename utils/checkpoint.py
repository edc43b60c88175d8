"""Weights and checkpoints on disk: safetensors written atomically, torch files loaded weights-only
(a pickle payload is refused, never run), and one clear line when a file does not fit a model."""
import os
import pickle
import warnings

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from utils.atomic import atomic_write_bytes, atomic_write_via
from utils.errors import UserError


def atomic_torch_save(obj, path) -> None:
    atomic_write_via(path, lambda f: torch.save(obj, f))


def save_weights(model_or_state, path, metadata: dict = None) -> int:
    """State dict -> safetensors (atomic). Returns the file size in bytes."""
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(state, metadata=meta))
    return os.path.getsize(path)


def load_state_dict_file(path) -> dict:
    """A state dict from .safetensors or a weights-only torch file. Pickled code is refused, never run."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file")
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable safetensors file ({e})")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickle protocols before refusing them
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported pickle content"
        raise UserError(f"{path}: refused, the file carries a pickle payload that weights-only loading "
                        f"does not run ({first[:160]})")
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path}: not a readable torch weights file ({str(e).splitlines()[0][:160]})")
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    return obj


def load_checkpoint(path) -> dict:
    """checkpoint.pt for resume: weights-only (tensors, numbers, strings, dicts), never arbitrary code."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: refused, not a weights-only checkpoint ({str(e).splitlines()[0][:160]})")
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path}: unreadable checkpoint, delete it to start over ({str(e).splitlines()[0][:120]})")


def load_weights_into(model: torch.nn.Module, path, what: str = "the model built from the config") -> None:
    """Load a weights file into `model`, with one clear line naming `what` when they do not match."""
    state = load_state_dict_file(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise UserError(f"{path}: weights do not match {what} ({detail})")
