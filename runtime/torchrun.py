"""One run over several processes: torchrun + DistributedDataParallel, and nothing without torchrun.

    torchrun --nproc-per-node=4 train.py --blocks=8 --batch_size=512          # one node, 4 GPUs
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=host:29500 train.py ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `start` then joins the process group (nccl on CUDA,
gloo on CPU) and each rank takes the GPU of its LOCAL_RANK. Every rank loads the same data and draws
the same seeded batches; each trains on its contiguous block of every batch (`batch_size` is the global
batch, so the effective batch and the learning rate are the single-process run's). DDP averages the
gradients. Rank 0 alone writes run files and prints; the others wait for it where it matters.

BatchNorm under data parallelism normalizes each rank's shard by its own statistics unless
`--sync_bn=True`, which all-reduces them over the global batch (`SyncBatchNorm` below: plain
all-reduces, so it runs on gloo and CPUs too, where torch's own SyncBatchNorm refuses). Dropout draws
from a stream per rank; rank 0's is the single-process run's.
"""
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from utils.device import resolve_device
from utils.errors import UserError
from utils.precision_table import AUTO  # --device=auto

RANK_SEED_STRIDE = 1_000_003  # rank r's dropout stream is seeded seed + r x this (rank 0: the seed's own)


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job; World() is a plain single-process run."""

    rank: int = 0
    size: int = 1
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self, sync_bn: bool) -> str:
        if self.size == 1:
            return "single process"
        return (f"DistributedDataParallel over {self.size} processes ({self.backend}), BatchNorm statistics "
                + ("of the global batch (SyncBatchNorm)" if sync_bn else "of each rank's shard"))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_spec: str) -> tuple:
    """(World, device) of this process: under torchrun, join the process group (once) and take the GPU
    of LOCAL_RANK; else World() and the device as configured."""
    if not launched_by_torchrun():
        return World(), resolve_device(device_spec)
    rank, size, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if device_spec not in (AUTO, "cuda"):
            raise UserError(f"--device={device_spec}: under torchrun each rank uses the GPU of its LOCAL_RANK; "
                            f"pass --device=cuda (or auto)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"--device={device_spec}: torchrun data parallelism runs on cuda (nccl) or cpu (gloo)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        if rank != 0:
            sys.stdout = open(os.devnull, "w")  # one report per job: rank 0's (errors still reach stderr)
    return World(rank, size, dist.get_backend()), device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block first (it builds a cache: the data's, the teacher's logits), then the others,
    who find it on disk."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the ranks, in place (unchanged in a single process)."""
    if active():
        dist.all_reduce(t)
    return t


def sync_buffers(module: nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics): all ranks then evaluate, and
    decide early stopping on, the very model rank 0 saves."""
    if active():
        for b in module.buffers():
            dist.broadcast(b, 0)


def gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] in a single process)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def data_parallel(distiller: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """The distiller (student and any adapter) in DistributedDataParallel: its forward is forward_train,
    and the gradients of everything it trains are averaged over the ranks in backward."""
    if sync_bn:
        convert_sync_batchnorm(distiller)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(distiller, device_ids=[device.index] if device.type == "cuda" else None)


class _AllSum(torch.autograd.Function):
    """Sum over the ranks whose gradient is the ranks' summed gradient (each rank's input feeds every
    rank's output)."""

    @staticmethod
    def forward(ctx, t):
        return all_sum(t.clone())

    @staticmethod
    def backward(ctx, grad):
        return all_sum(grad.clone())


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are the global batch's: per-channel sums all-reduced over the
    ranks (differentiably, so the gradient through the statistics is the global batch's too), in float32.
    Two passes (mean, then the centred second moment) keep the variance exact to float rounding.
    In eval mode, or in a single process, it is nn.BatchNorm."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        all_reduce = _AllSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 activations: statistics in fp32
        count = all_sum(torch.tensor(float(xf.numel() // xf.shape[1]), dtype=xf.dtype, device=x.device))
        mean = all_reduce(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / self.num_batches_tracked.item()) if self.momentum is None else self.momentum
                unbiased = var.detach() * count / (count - 1).clamp_min(1.0)  # no host sync
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm1d/2d/3d under `module` becomes a SyncBatchNorm holding the same parameters and
    buffers (same names: the saved state dicts do not change)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            if child.track_running_stats:
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
