"""--precision=auto and --teacher_precision=auto, decided by measuring, not by a CPU flag.

A flag is not a speed: on an Intel Xeon without AMX (AVX512-BF16 present) bf16 trained res4 1.33x slower
than fp32; on an AMD EPYC Zen 5 a resnet32 step ran 1.7x faster in bf16. So on a CPU with native bf16
units, auto times a few steps of the run's own model at its own batch in fp32 and in bf16 (a training step
for --precision, the teacher's forward for --teacher_precision), interleaved, and picks bf16 only where it
is at least MARGIN faster. The measurement is cached in <data_dir>/cache/auto_precision.json, keyed by the
CPU model, torch version, thread count, model and batch, so later runs do not pay for it again (not when the
machine was busy as it measured: such a timing decides for this process alone). A CPU
without bf16 units gets fp32 without measuring (bf16 is emulated there); a GPU keeps the capability rule
(sm_80+). The run's summary says what was measured, e.g. "auto: fp32 (bf16 measured 1.33x slower)".
"""
import dataclasses
import os
import time
from contextlib import nullcontext

import torch

from data.dataset import NATIVE_SIZE, SCENES
from runtime.inference import CPU_EVAL_PIXELS
from utils.atomic import atomic_write_json, read_json_object
from utils.device import cpu_identity, native_bf16, resolve_auto_precision
from utils.precision_table import AUTO, BF16, FP32
from utils.names import SEGMENT
from utils.run_files import CONFIG

MARGIN = 1.10  # bf16 must beat fp32 by 10% to be worth its rounding
WARMUP, STEPS, ROUNDS = 2, 3, 2  # per precision and round: the median step of STEPS after WARMUP
CACHE_FILE = "auto_precision.json"
CHANNELS = {"fashion-mnist": 1, SCENES: 1}  # others are RGB
# others 10 (an image folder's count changes a classifier's last layer only; a segmenter's head runs at every pixel)
CLASSES = {"cifar100": 100, "intel": 6, SCENES: 11, "voc": 21}


def model_shape(cfg) -> tuple:
    """(channels, classes, (height, width)) of cfg's data, from the dataset's name alone (no data is loaded): a
    square image, or the scenes' canvas."""
    size = cfg.image_size or NATIVE_SIZE.get(cfg.dataset, 32)
    return (CHANNELS.get(cfg.dataset, 3), CLASSES.get(cfg.dataset, 10),
            tuple(cfg.scene_canvas) if cfg.dataset == SCENES else (size, size))


def timed_config(cfg, role: str):
    """The config whose model auto times: the run's own (role "train": a student, or a teacher run), or the
    frozen teacher it learns from (role "teacher": the arch and width its checkpoint's config.json records,
    the first member's for an ensemble), with the fields only a student may carry cleared."""
    if role == "train":
        return cfg
    first = cfg.teacher_checkpoint.split(",")[0].strip()
    path = os.path.join(first, CONFIG) if first and os.path.isdir(first) else ""
    saved = (read_json_object(path) if path and os.path.isfile(path) else None) or {}
    arch = saved.get("teacher_arch") if isinstance(saved.get("teacher_arch"), str) else cfg.teacher_arch
    width = saved.get("teacher_width") if isinstance(saved.get("teacher_width"), int) else cfg.teacher_width
    return dataclasses.replace(cfg, role="teacher", teacher_arch=arch, teacher_width=width, teacher_pretrained=False,
                               unlabeled_samples=0, qat="none", init_from="", student_weights="")


def timed_batch(cfg, role: str) -> int:
    """A training step's batch, or the batch predict() evaluates a teacher at on a CPU (capped in pixels)."""
    if role == "train":
        return cfg.batch_size
    h, w = model_shape(cfg)[2]
    return max(1, min(cfg.eval_batch_size, CPU_EVAL_PIXELS // (h * w)))


def cache_key(cfg, role: str) -> str:
    cpu = cpu_identity()
    t = timed_config(cfg, role)
    model = (f"{t.role} {t.teacher_arch} width {t.teacher_width}" if t.role == "teacher" else
             f"student {t.student_arch or f'res{t.blocks} width {t.width} fc {t.fc_layers}'}")
    return (f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{'forward' if role == 'teacher' else 'train'} {model} | batch {timed_batch(cfg, role)}"
            f" | {model_shape(cfg)} | channels_last {cfg.channels_last}")


def time_step(cfg, role: str, bf16: bool) -> float:
    """Median seconds of one step of the timed model (timed_config) in fp32 or bf16 autocast: a training step
    (forward, backward, SGD) of the run's own model, or a forward without gradients of its teacher."""
    from models.teacher_arch import build_model

    channels, classes, size = model_shape(cfg)
    torch.manual_seed(0)
    t = timed_config(cfg, role)
    model = build_model(dataclasses.replace(t, teacher_pretrained=False, student_weights=""), channels, classes)
    batch = timed_batch(cfg, role)
    x = torch.randn(batch, channels, *size)
    y = torch.randint(0, classes, (batch, *size) if t.task == SEGMENT else (batch,))  # a segmenter's: a class a pixel
    if cfg.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def step():
        if role == "teacher":
            with torch.no_grad(), cast():
                model.eval()(x)
            return
        with cast():
            loss = torch.nn.functional.cross_entropy(model.train()(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(WARMUP + STEPS):
        t = time.perf_counter()
        step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure(cfg, role: str) -> dict:
    """Seconds per step in fp32 and bf16, the best of ROUNDS interleaved rounds (the machine may be noisy)."""
    fp32, bf16 = [], []
    for _ in range(ROUNDS):
        fp32.append(time_step(cfg, role, False))
        bf16.append(time_step(cfg, role, True))
    return {"fp32_seconds": min(fp32), "bf16_seconds": min(bf16)}


def cache_path(cfg) -> str:
    return os.path.join(cfg.data_dir, "cache", CACHE_FILE)


def busy() -> str:
    """Why a timing taken now would not be this machine's (its 1-minute load average at or above the cores this
    process may use: something else runs, and two processes on 2 cores slow both precisions tens of times), or
    "" when it looks idle."""
    try:
        load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average here: trust the measurement
        return ""
    return f"load average {load:.1f} on {cores} cores" if load >= cores else ""


# measurements taken on a busy machine, kept for this process alone: every run of one sweep (its plan, its groups,
# its table) then gets the same choice, where measuring each again could pick bf16 for a student and fp32 for its
# control, and name them so
_THIS_PROCESS = {}


def measured(cfg, role: str) -> dict:
    """This machine's measurement for cfg's model, from the cache or timed now, and cached unless the machine was
    busy (then "busy" says why, this process keeps it, and the next process measures again)."""
    path, key = cache_path(cfg), cache_key(cfg, role)
    cache = (read_json_object(path) if os.path.isfile(path) else None) or {}
    found = cache.get(key) or _THIS_PROCESS.get((path, key))
    if isinstance(found, dict) and all(isinstance(found.get(k), float) and found[k] > 0
                                       for k in ("fp32_seconds", "bf16_seconds")):
        return found
    why = busy()
    found = measure(cfg, role)
    if why:  # not this machine's speed: kept for this process only, never written
        _THIS_PROCESS[(path, key)] = found = {**found, "busy": why}
        return found
    try:
        atomic_write_json(path, {**cache, key: found})
    except OSError:  # a read-only data_dir: measured again next time, nothing lost
        pass
    return found


def choose(cfg, role: str, device: torch.device) -> tuple:
    """(precision, note) for auto in `role` (train: --precision, teacher: --teacher_precision)."""
    units = native_bf16(device)
    if device.type != "cpu" or not units:
        return resolve_auto_precision(AUTO, device)
    m = measured(cfg, role)
    speed = m["fp32_seconds"] / m["bf16_seconds"]
    what = "training step" if role == "train" else "teacher forward"
    where = f"this CPU, {units}" + (f"; {m['busy']} as it measured, so not cached past this process"
                                     if m.get("busy") else "")
    if speed >= MARGIN:
        return BF16, f"auto: bf16 ({what} measured {speed:.2f}x the speed of fp32 on {where})"
    how = f"{1 / speed:.2f}x slower" if speed < 1 else f"only {speed:.2f}x faster, under the {MARGIN:.2f}x margin"
    return FP32, f"auto: fp32 (bf16 {what} measured {how} on {where})"


def resolve_auto(cfg, device: torch.device):
    """The config with --precision=auto and --teacher_precision=auto resolved for `device` by measurement; the
    note, shown in the run's summary and precision description, says what auto chose and why."""
    precision, note = choose(cfg, "train", device) if cfg.precision == AUTO else (cfg.precision, "")
    teacher, t_note = (choose(cfg, "teacher", device) if cfg.teacher_precision == AUTO
                       else (cfg.teacher_precision, ""))
    if (precision, teacher) == (cfg.precision, cfg.teacher_precision):
        return cfg
    note = note or (f"teacher forward {t_note}" if t_note else "")
    return dataclasses.replace(cfg, precision=precision, teacher_precision=teacher,
                               precision_note="; ".join(n for n in (cfg.precision_note, note) if n))

