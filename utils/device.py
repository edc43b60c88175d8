"""The machine: which device a run uses, what hardware it is, which CPU features it has, and
bitsandbytes imported quietly. Every summary and benchmark names the hardware through here."""
import torch

from utils.errors import UserError

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
             "amx_int8", "amx_fp16")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
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


def cpu_flags() -> list:
    """The ISA extensions of ISA_FLAGS this CPU has (from /proc/cpuinfo; [] where unknown)."""
    have = set((_cpuinfo_field("flags") or "").split())
    return [f for f in ISA_FLAGS if f in have]


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
