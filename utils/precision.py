"""Every numeric precision in one place: fp32, fp16 (autocast + GradScaler), bf16 (autocast), fp8.

The trainer has one code path: `with prec.autocast(): loss = ...` then `prec.step(loss, optimizer)`.
`prec.description` says exactly what ran, on what device and how; every summary records it.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Precision:
    name: str
    device: torch.device
    autocast_dtype: Optional[torch.dtype]
    scaler: Optional[torch.amp.GradScaler]
    description: str

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
        if self.name == "fp16":
            return ("fp16 overflowed: GradScaler only scales gradients, so a forward overflow is not caught; "
                    "try --precision=bf16, a lower --lr, or fp32")
        if self.name == "fp8":
            return "fp8 numerics diverged: try a lower --lr or --precision=bf16"
        return "try a lower --lr"


def setup_precision(name: str, model: torch.nn.Module, device: torch.device) -> Precision:
    """Prepare `model` (in place) for `name` and return the step helpers and an honest description."""
    where = f"on {device.type}"
    if name == "fp32":
        return Precision(name, device, None, None, f"fp32 {where}")
    if name in AUTOCAST_DTYPES:
        dtype = AUTOCAST_DTYPES[name]
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        how = "autocast float16 + GradScaler" if name == "fp16" else "autocast bfloat16"
        return Precision(name, device, dtype, scaler, f"{name}: {how} {where}")
    if name == "fp8":
        from utils.fp8 import convert_to_fp8
        return Precision(name, device, None, None, f"{convert_to_fp8(model, device)} {where}")
    raise ValueError(f"unknown precision {name!r}")
