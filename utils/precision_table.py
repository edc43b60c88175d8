"""The precisions, in one torch-free table: everything the project knows of a numeric precision outside the
step helpers that apply it (utils/precision.py) and the FP8 numerics (utils/fp8.py).

Per precision: its autocast dtype, loss scaling, model conversion, what the sweep runs in its place on a CPU,
the optimizer its sweep students use, why a CUDA graph cannot capture it, the hint a non-finite loss prints,
its --precision doc, plot colour and marker. config's choices and docs, config_rules, the sweep
(sweep/plan.student_config), runtime/cuda_graphs.plan, the teacher's forward, deploy's half variants,
results.csv and the plots derive from it; no other module spells a precision's name. The table lives here, in
utils/, because the reports and plots read it and config imports it without torch.

A summary records what ran as fields (utils/run_files.PRECISION_KEYS: substituted_for, fp8_layers);
recorded_precision reads them, and reads an older summary, which has only its precision_description
sentence, the way the readers always did."""
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from utils.run_files import FP8_LAYERS, SUBSTITUTED_FOR

FP32, FP16, BF16, FP8, AUTO = "fp32", "fp16", "bf16", "fp8", "auto"  # --device=auto shares AUTO's word and sense
OTHER_LOOK = ("#9467bd", "o")  # (colour, marker) of a precision this version does not know (an old run's)


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision (--precision=<name>), or the pseudo-precision auto (chosen=True)."""
    name: str
    doc: str  # what --precision's doc says of it (docs/config.md)
    look: tuple = OTHER_LOOK  # (matplotlib colour, marker) of its students in the plots
    dtype: Optional[str] = None  # torch.<dtype> its autocast computes in (deploy's half variants: their weights)
    grad_scaler: bool = False  # loss scaling (torch.amp.GradScaler) in every step
    # "module.function": converts the model in place, returns (its description, the summary fields it records)
    converter: str = ""
    cpu_substitute: tuple = ()  # (what the sweep runs in its place on a CPU when --fp16_on_cpu names it, why)
    optimizer: dict = field(default_factory=dict)  # {--optimizer: what the sweep's students of it use instead}
    graph_refusal: str = ""  # why a CUDA graph cannot capture its training step ("" = one can)
    nonfinite_hint: str = "try a lower --lr"  # the end of the one line a non-finite training loss stops a run with
    teacher: bool = False  # the frozen teacher's forward may run in it (--teacher_precision)
    chosen: bool = False  # auto: a real precision is chosen for the machine before the run is named


# in sweep order (the results table, every legend)
PRECISION_TABLE = (
    PrecisionSpec(FP32, FP32, ("#1f77b4", "o"), teacher=True),
    PrecisionSpec(FP16, "fp16 (autocast + GradScaler)", ("#ff7f0e", "D"), dtype="float16", grad_scaler=True,
                  cpu_substitute=(BF16, "fp16 autocast on this CPU trains ~100x slower"),
                  graph_refusal="fp16's GradScaler checks for inf on the host every step, outside any graph",
                  nonfinite_hint="fp16 overflowed: GradScaler only scales gradients, so a forward overflow is not "
                                 "caught; try --precision=bf16, a lower --lr, or fp32"),
    PrecisionSpec(BF16, "bf16 (autocast)", ("#2ca02c", "s"), dtype="bfloat16", teacher=True),
    # the sweep's fp8 students keep optimizer state in 8 bits too (bitsandbytes Adam8bit), as the original intended
    PrecisionSpec(FP8, "fp8 (e4m3/e5m2 numerics)", ("#d62728", "^"), converter="utils.fp8.fp8_training",
                  optimizer={"adam": "adam8bit"}, graph_refusal="simulated fp8 re-scales with host-side control flow",
                  nonfinite_hint="fp8 numerics diverged: try a lower --lr or --precision=bf16"),
    PrecisionSpec(AUTO, "auto (bf16 where a few timed steps on this CPU show it 10% faster than fp32, "
                  "measured once and cached; on a GPU bf16 from sm_80; fp32 elsewhere)",
                  teacher=True, chosen=True),
)
PRECISIONS = {p.name: p for p in PRECISION_TABLE}
TRAINED = tuple(p.name for p in PRECISION_TABLE if not p.chosen)  # what a run trains in (its name says which)
CHOICES = tuple(PRECISIONS)  # --precision and --sweep_precisions
TEACHER_CHOICES = tuple(p.name for p in PRECISION_TABLE if p.teacher)  # --teacher_precision
SWEEP_DEFAULT = (FP32, FP16, FP8)  # --sweep_precisions' default
FP16_ON_CPU = (PRECISIONS[FP16].cpu_substitute[0], FP16)  # --fp16_on_cpu: bf16 in its place, or fp16 itself
PRECISION_DOC = " | ".join(p.doc for p in PRECISION_TABLE)  # --precision's doc (docs/config.md)


def on_cpu(name: str, device_type: str, fp16_on_cpu: str) -> tuple:
    """(the precision the sweep trains for `name`, the note its summary shows, the precision it stands in for
    or ""): bf16 in place of fp16 on a CPU where --fp16_on_cpu says so; `name` itself elsewhere."""
    sub = PRECISIONS[name].cpu_substitute if name in PRECISIONS else ()
    if sub and device_type == "cpu" and fp16_on_cpu == sub[0]:
        return sub[0], f"in place of {name} ({sub[1]})", name
    return name, "", ""


def sweep_optimizer(name: str, optimizer: str) -> str:
    """The optimizer the sweep's students of precision `name` use for --optimizer (fp8: adam -> adam8bit)."""
    return PRECISIONS[name].optimizer.get(optimizer, optimizer) if name in PRECISIONS else optimizer


def graph_refusal(name: str) -> str:
    return PRECISIONS[name].graph_refusal if name in PRECISIONS else ""


def precision_order(precision: str) -> int:
    return TRAINED.index(precision) if precision in TRAINED else len(TRAINED)


def precision_color(precision: str) -> str:
    return PRECISIONS[precision].look[0] if precision in TRAINED else OTHER_LOOK[0]


def precision_marker(precision: str) -> str:
    return PRECISIONS[precision].look[1] if precision in TRAINED else OTHER_LOOK[1]


class Recorded(NamedTuple):
    """What a summary says of how its precision ran, beyond the name."""
    substituted_for: str  # the precision it ran in place of ("" = none)
    fp8_native: bool  # some layers ran native FP8 matmuls
    fp8_simulated: bool  # some layers ran simulated FP8 numerics


def recorded_precision(summary: dict) -> Recorded:
    """The summary's structured fields (SUBSTITUTED_FOR, written in every summary since they exist; FP8_LAYERS).

    READING OLD SUMMARIES: one without SUBSTITUTED_FOR was written before the fields existed; its only record
    is the precision_description sentence, read here as the readers always read it (and only here)."""
    if SUBSTITUTED_FOR in summary:
        layers = summary.get(FP8_LAYERS) if isinstance(summary.get(FP8_LAYERS), dict) else {}
        return Recorded(summary.get(SUBSTITUTED_FOR) or "", bool(layers.get("native")),
                        bool(layers.get("simulated")))
    desc = summary.get("precision_description") or ""
    fp8 = summary.get("precision") == FP8
    substituted = FP16 if summary.get("precision") == BF16 and "in place of fp16" in desc else ""
    return Recorded(substituted, fp8 and "native" in desc, fp8 and "simulat" in desc)


def precision_how(summary: dict) -> str:
    """results.csv's short label of how the precision really ran, e.g. 'fp8 simulated e4m3/e5m2', 'bf16 autocast
    on cpu in place of fp16'; a name this version does not know, as recorded."""
    p = summary.get("precision", "")
    spec, rec = PRECISIONS.get(p), recorded_precision(summary)
    if spec is None or spec.chosen:
        return p
    if spec.converter:
        kind = "native" + ("+simulated" if rec.fp8_simulated else "") if rec.fp8_native else "simulated"
        return f"{p} {kind} e4m3/e5m2"
    if not summary.get("device") and spec.dtype is None:
        return p
    how = f" autocast{'+GradScaler' if spec.grad_scaler else ''}" if spec.dtype else ""
    return f"{p}{how} on {summary.get('device', '?')}" + (f" in place of {rec.substituted_for}"
                                                          if rec.substituted_for else "")


def precision_label(summaries: list, precision: str) -> str:
    """The legends' name of the students of `precision`: 'fp8 (simulated e4m3/e5m2)', 'bf16 (in place of
    fp16)' where one of them ran in place of fp16, else the name."""
    recs = [recorded_precision(s) for s in summaries
            if (FP32 if s.get("precision") is None else s["precision"]) == precision]
    if PRECISIONS.get(precision) and PRECISIONS[precision].converter:
        native_only = any(r.fp8_native for r in recs) and not any(r.fp8_simulated for r in recs)
        return f"{precision} (native)" if native_only else f"{precision} (simulated e4m3/e5m2)"
    substituted = next((r.substituted_for for r in recs if r.substituted_for), "")
    return f"{precision} (in place of {substituted})" if substituted else precision
