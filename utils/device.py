"""The machine: which device a run uses, what hardware it is, which CPU features it has, and
bitsandbytes imported quietly. Every summary and benchmark names the hardware through here."""
import torch

from utils.errors import UserError
from utils.precision_table import AUTO, BF16, FP32

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
             "amx_int8", "amx_fp16")


def resolve_device(spec: str) -> torch.device:
    if spec == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={spec}: CUDA is not available on this machine; use --device=cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device={spec}: MPS is not available on this machine; use --device=cpu")
    return dev


def _cpuinfo_field(name: str):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{_cpuinfo_field('model name') or 'CPU'}, {torch.get_num_threads()} threads"


def cpu_identity() -> str:
    """The CPU's model name, family and model number: two machines sold under one name may differ in family."""
    return f"{_cpuinfo_field('model name') or 'CPU'} (family {_cpuinfo_field('cpu family')}, model " \
           f"{_cpuinfo_field('model')})"


def cpu_flags() -> list:
    """The ISA extensions of ISA_FLAGS this CPU has (from /proc/cpuinfo; [] where unknown)."""
    have = set((_cpuinfo_field("flags") or "").split())
    return [f for f in ISA_FLAGS if f in have]


def native_bf16(device: torch.device) -> str:
    """What gives this device native bf16 matrix units ("AMX", "AVX512-BF16", "sm_90 tensor cores"), or
    "" when it has none: read from the CPU's flags or the GPU's compute capability, never guessed."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor} tensor cores" if major >= 8 else ""
    if device.type != "cpu":
        return ""
    flags = cpu_flags()
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""


def resolve_auto_precision(name: str, device: torch.device) -> tuple:
    """(precision, note) for --precision / --teacher_precision by the hardware alone: `auto` becomes bf16 where
    it has native bf16 units and fp32 elsewhere; other names pass through. On a CPU with such units the
    runtime measures instead (runtime/auto_precision.py): a flag is not a speed."""
    if name != AUTO:
        return name, ""
    units = native_bf16(device)
    if units:
        return BF16, f"auto: {units}"
    isa = "; ".join(cpu_flags()[:2]) if device.type == "cpu" else device.type
    return FP32, f"auto: no native bf16 units ({isa or 'unknown CPU'})"


# oneDNN's AVX2/AVX-512 kernel for the weight gradient of a strided 1x1 convolution in channels_last
# corrupts memory when the input has few channels: on a 2-core AMD EPYC (AVX2), Conv2d(c, 2c, 1,
# stride=2) with c in 2..7 aborted, segfaulted or hung in backward in most of 10 tries, while c >= 8
# always passed; an AVX-512 Xeon crashed on c = 4 (RGB data). 16 leaves a margin for wider vectors.
# Only training meets it (inference has no weight gradient); such a model trains in NCHW instead.
MIN_STRIDED_1X1_CHANNELS_LAST = 16


def channels_last_trainable(model) -> bool:
    """False when `model` has a strided 1x1 convolution with fewer than 16 input channels: training
    it in channels_last would meet the oneDNN bug above on a CPU."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1 \
                and m.in_channels < MIN_STRIDED_1X1_CHANNELS_LAST:
            return False
    return True


def import_bitsandbytes():
    """bitsandbytes, without its CPU backend's warning that an optional hub kernel is missing
    (it falls back to its own kernels; the warning is noise in every fp8 run's log)."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes
