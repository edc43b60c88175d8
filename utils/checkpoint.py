"""Weights files on disk: safetensors written atomically, torch files loaded weights-only (a pickle
payload is refused, never run), and one clear line when a file does not fit a model. checkpoint.pt's
format is utils/run_files.py's."""
import os
import pickle
import warnings

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from utils.atomic import atomic_write_bytes, atomic_write_via
from utils.errors import UserError, first_line, shorten


def atomic_torch_save(obj, path) -> None:
    atomic_write_via(path, lambda f: _torch_save(obj, f))


def _torch_save(obj, f) -> None:
    """torch.save into an open file; a full disk (or any failed write) is the OSError the write raised: torch's
    zip writer turns it into a RuntimeError ('unexpected pos ...') that would escape as a traceback."""
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def save_weights(model_or_state, path, metadata: dict = None) -> int:
    """State dict -> safetensors (atomic). Returns the file size in bytes."""
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    seen = set()  # safetensors refuses tensors sharing memory (an int8 QAT graph's shared quantizer): a copy each
    for k, v in state.items():
        if v.numel() and v.data_ptr() in seen:
            state[k] = v.clone()
        seen.add(v.data_ptr())
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(state, metadata=meta))
    return os.path.getsize(path)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_PROTO = b"\x80"      # a pickle of protocol 2+, torch's legacy format among them
# what weights-only loading rebuilds (__builtin__: builtins as pickle protocol 2, torch.save's, names it)
SAFE_MODULES = ("torch", "collections", "numpy", "_codecs", "builtins", "__builtin__")


def _pickle_imports(path) -> list:
    """'module.name' of every global a pickle file imports, read with pickletools (nothing is run): the file
    itself (torch's legacy format), or the data.pkl inside torch.save's zip archive."""
    import pickletools
    import zipfile

    found, strings = [], []
    try:
        with open(path, "rb") as raw:
            zipped = zipfile.ZipFile(raw) if zipfile.is_zipfile(raw) else None
            raw.seek(0)
            member = next((n for n in zipped.namelist() if n.endswith("data.pkl")), None) if zipped else None
            f = zipped.open(member) if member else raw
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was found before the damage
        pass
    return found


def _torch_reason(err) -> str:
    """torch's own explanation without its boilerplate ('Weights only load failed. In PyTorch 2.6 ...')."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    elif text.startswith("Weights only load failed"):  # torch 2.14: the reason is the paragraph after the advice
        reasons = [p for p in text.split("\n\n")[1:] if p.strip() and "Check the documentation" not in p]
        text = reasons[0] if reasons else text
    return first_line(text if text.strip() else err)


def load_torch_file(path, unreadable=UserError):
    """torch.load(weights_only=True) with one line naming what the file really is when it fails:
    empty, not a torch file at all, a damaged archive, or a pickle carrying code (refused, never run)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})")
    if not head:
        raise unreadable(f"{path}: empty file (0 bytes), not a torch weights file")
    if not head.startswith((ZIP_MAGIC, PICKLE_PROTO)):
        kind = "text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "binary data"
        raise unreadable(f"{path}: not a torch weights file (it holds {kind}, not the zip archive torch.save "
                         f"writes)")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = [g for g in _pickle_imports(path) if not g.startswith(SAFE_MODULES)]
        if code:
            raise UserError(f"{path}: refused, the file carries a pickle payload (it imports {code[0]}) that "
                            f"weights-only loading never runs")
        raise unreadable(f"{path}: refused, its pickle holds something weights-only loading does not accept "
                         f"({_torch_reason(e)})")
    except Exception as e:  # noqa: BLE001 - any other failure of a damaged file, as one line
        reason = first_line(e).split(". ")[0]  # torch's first sentence says what broke
        raise unreadable(f"{path}: damaged torch file ({type(e).__name__}: {reason})")


def load_state_dict_file(path) -> dict:
    """A state dict from .safetensors or a weights-only torch file. Pickled code is refused, never run."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file")
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable safetensors file ({first_line(e)})")
    obj = load_torch_file(path)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    return obj


def load_weights_into(model: torch.nn.Module, path, what: str = "the model built from the config") -> None:
    """Load a weights file into `model`, with one clear line naming `what` when they do not match."""
    state = load_state_dict_file(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = shorten(str(e), 200)
        raise UserError(f"{path}: weights do not match {what} ({detail})")
