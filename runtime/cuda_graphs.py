"""Graph-captured training steps on CUDA (opt-in, `--cuda_graphs=True`): the step's forward, loss and
backward run as CUDA graphs through torch.compile(mode="reduce-overhead"), and the optimizer step is
compiled too, with the learning rate as a device tensor so the schedule never forces a recompile.
Batches have fixed shapes (the sampler drops the ragged last batch) and the augmentation's randomness
is drawn on the CPU generator before the graph, so replays stay valid.

Where capture cannot work the step stays eager and `plan()` says why, in one line.
NOT YET MEASURED: this project's machines have had no GPU while this was written; see docs/speed.md.
"""
import torch

from runtime.epochs import Trainee
from utils.names import METHODS
from utils.precision_table import graph_refusal


def plan(cfg, device: torch.device, precision: str, world_size: int = 1) -> tuple:
    """(capture?, the one line a run prints and its summary records)."""
    if not cfg.cuda_graphs:
        return False, "eager steps"
    if device.type != "cuda":
        return False, f"eager steps: CUDA graphs need a CUDA device, this run is on {device.type}"
    if world_size > 1:
        return False, "eager steps: under torchrun DistributedDataParallel's gradient hooks run outside any graph"
    if graph_refusal(precision):  # the precision table's: fp16's GradScaler, fp8's host-side re-scaling
        return False, f"eager steps: {graph_refusal(precision)}"
    if cfg.role == "student" and METHODS[cfg.method].per_image:
        return False, f"eager steps: {cfg.method} writes its per-image buffer at each batch's own rows"
    if cfg.optimizer == "adam8bit":
        return False, "eager steps: bitsandbytes' 8-bit optimizer is not capturable"
    return True, "CUDA graphs: torch.compile(mode=reduce-overhead) step, compiled optimizer, tensor learning rate"


def optimizer_kwargs(cfg, device: torch.device) -> dict:
    """What build_optimizer adds for a captured step: the learning rate as a device tensor and, for the
    Adam family, capturable state (its step counters live on the device)."""
    kw = {"lr": torch.tensor(cfg.lr, device=device)}
    if cfg.optimizer in ("adam", "adamw"):
        kw["capturable"] = True
    return kw


def capture(trainee: Trainee) -> None:
    """Compile the trainee's forward+loss and its optimizer step in place (first calls compile)."""
    trainee.forward = torch.compile(trainee.distiller.forward_train, mode="reduce-overhead")
    trainee.optimizer.step = torch.compile(trainee.optimizer.step, mode="reduce-overhead")
    trainee.rng.swap = False  # graph replays draw dropout from the shared CUDA generator (grouped runs: within noise)
