"""What every variant builder gets (BuildContext) and returns (Variant)."""
import copy
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Variant:
    """A deployable form of the model. `run` maps a normalized float32 NCHW batch to float32 logits."""

    name: str
    run: Optional[Callable[[torch.Tensor], torch.Tensor]]
    artifact: Optional[str]  # the file a deployment would ship; its real size is reported
    note: str
    status: str = "ok"  # ok | skipped
    build_seconds: float = 0.0  # set by deploy.variants._build, which times every builder alike
    facts: dict = field(default_factory=dict)  # more fields of its deploy.json row (int8: which ops are int8)


def skipped(name: str, reason: str) -> Variant:
    return Variant(name, None, None, reason, status="skipped")


@dataclass
class BuildContext:
    model: torch.nn.Module  # fp32, eval mode, on the CPU; builders copy it, never change it
    calib: list  # normalized float32 batches of training images (calibration for static int8)
    example: torch.Tensor  # one normalized batch (export / tracing example)
    out_dir: str  # <run>/deploy
    channels_last: bool
    compile: bool = True  # False: no torch.compile (tests; compile costs minutes on 2 cores)
    artifacts: dict = field(default_factory=dict)  # name -> path, for variants that share a file

    def fresh_model(self, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        m = copy.deepcopy(self.model).to(dtype).eval()
        return m.to(memory_format=torch.channels_last) if self.channels_last else m

    def path(self, filename: str) -> str:
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, filename)

    @property
    def calib_images(self) -> int:
        return sum(x.shape[0] for x in self.calib)


def first_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:limit]}"
