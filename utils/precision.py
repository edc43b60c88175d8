"""The one precision switch: a Precision built from the precision table's entry (utils/precision_table.py),
whatever the name: autocast in the entry's dtype, a GradScaler where it says so, its model conversion (fp8).

The trainer has one code path: `with prec.autocast(): loss = ...` then `prec.step(loss, optimizer)`.
`prec.description` says exactly what ran, on what device and how, and `prec.record` the summary's fields of it
(utils/run_files.PRECISION_KEYS); every summary records both.
"""
import importlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import torch

from utils.precision_table import PRECISIONS
from utils.run_files import PRECISION_KEYS


@dataclass
class Precision:
    name: str
    device: torch.device
    autocast_dtype: Optional[torch.dtype]
    scaler: Optional[torch.amp.GradScaler]
    description: str
    record: dict = field(default_factory=lambda: dict.fromkeys(PRECISION_KEYS))  # null where a key does not apply

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward + optimizer step (+ loss scaling for fp16)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def nonfinite_hint(self) -> str:
        return PRECISIONS[self.name].nonfinite_hint


def autocast_dtype(name: str) -> Optional[torch.dtype]:
    """The torch dtype precision `name` autocasts to, None for none (fp32, fp8)."""
    dtype = PRECISIONS[name].dtype
    return getattr(torch, dtype) if dtype else None


def autocast_context(name: str, device_type: str):
    """A context factory for evaluating in precision `name`: autocast in its dtype on `device_type` (bf16, fp16),
    or a no-op where it has none (fp32, fp8, an unresolved auto)."""
    dtype = autocast_dtype(name)
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device_type, dtype=dtype)


def setup_precision(name: str, model: torch.nn.Module, device: torch.device) -> Precision:
    """Prepare `model` (in place) for `name` and return the step helpers and an honest description."""
    spec = PRECISIONS.get(name)
    if spec is None or spec.chosen:  # auto is resolved to a real precision before a run is built
        raise ValueError(f"unknown precision {name!r}")
    where = f"on {device.type}"
    dtype = autocast_dtype(name)
    scaler = torch.amp.GradScaler(device.type) if spec.grad_scaler else None
    prec = Precision(name, device, dtype, scaler, f"{name} {where}")
    if dtype is not None:
        prec.description = f"{name}: autocast {spec.dtype}{' + GradScaler' if scaler else ''} {where}"
    if spec.converter:
        module, _, function = spec.converter.rpartition(".")
        description, record = getattr(importlib.import_module(module), function)(model, device)
        prec.description = f"{description} {where}"
        prec.record.update(record)
    return prec
