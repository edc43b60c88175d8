"""One table of the sweep's names: distillation methods and precisions, their order (the order of
the sweep, the results table and every legend), labels and plot styles. Torch-free.

A method missing here (a new one) still sorts after the known ones and gets a generic style."""
from typing import NamedTuple


class MethodLook(NamedTuple):
    label: str  # legends and tables
    line: object  # matplotlib line style of its learning curves (a name or a dash tuple)
    hatch: str  # bar hatch where bars of several methods stand side by side


METHOD_LOOKS = {  # in sweep order
    "ce": MethodLook("CE control (no teacher)", "--", ""),
    "kd": MethodLook("KD (Hinton)", "-", ""),
    "dkd": MethodLook("DKD (decoupled)", "-.", "//"),
    "fitnet": MethodLook("FitNet (hints)", (0, (3, 1, 1, 1, 1, 1)), "xx"),
    "at": MethodLook("AT (attention transfer)", (0, (5, 2)), "\\\\"),
    "fm": MethodLook("FM (function matching)", (0, (1, 1)), "++"),
    "pl": MethodLook("pseudo-labels (CE on the teacher's argmax)", (0, (5, 1, 1, 1)), "oo"),
}
PRECISION_LOOKS = {  # name: (colour, marker), in sweep order
    "fp32": ("#1f77b4", "o"),
    "fp16": ("#ff7f0e", "D"),
    "bf16": ("#2ca02c", "s"),
    "fp8": ("#d62728", "^"),
}
# --qat: the weight grid a student trains on (quant/), in table order; bits as the grids' names say
QAT_MODES = ("none", "int8", "int4", "ternary", "binary")
OTHER_COLOR = "#9467bd"
CE_COLOR = "#7f7f7f"  # the CE control: no teacher, fp32
TEACHER_COLOR = "black"


def method_look(method: str) -> MethodLook:
    """The look of a method, or of a method with a transfer set ("kd+20000u": dotted, its count named)."""
    name, _, transfer = method.partition("+")
    look = METHOD_LOOKS.get(name, MethodLook(name.upper(), ":", ".."))
    return look._replace(label=f"{look.label} + {int(transfer[:-1]):,} unlabeled", line=":") if transfer else look


def method_order(method: str) -> int:
    return list(METHOD_LOOKS).index(method) if method in METHOD_LOOKS else len(METHOD_LOOKS)


def precision_order(precision: str) -> int:
    return list(PRECISION_LOOKS).index(precision) if precision in PRECISION_LOOKS else len(PRECISION_LOOKS)


def precision_color(precision: str) -> str:
    return PRECISION_LOOKS.get(precision, (OTHER_COLOR, "o"))[0]


def precision_marker(precision: str) -> str:
    return PRECISION_LOOKS.get(precision, (OTHER_COLOR, "o"))[1]


def grid_order(blocks: int, method: str, precision: str) -> tuple:
    """Sort key of a student group in sweep order: depth, then method, then precision."""
    return blocks, method_order(method), precision_order(precision), method
