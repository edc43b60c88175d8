"""The sweep's names, in one torch-free table each: the distillation methods (the method table: everything the
project knows of a method outside its own file) and the QAT grids, their order (the order of the sweep, the
results table and every legend), labels and plot styles. The precisions have their own table,
utils/precision_table.py.

A method is one file, distill/<name>.py (its loss and Distiller), and one entry in METHOD_TABLE below; config
(--method's choices and doc, each hyper-parameter's methods), config_rules (teacher and feature-map rules, each
method's own refusals), tune.py (the search space), distill.DISTILLERS and the plots derive from the entry.
The table lives here, in utils/, because the reports and plots under utils/ read it and utils/ imports no
higher layer. A method missing here (an old run's) still sorts after the known ones and gets a generic style."""
from dataclasses import dataclass, field
from typing import NamedTuple

from utils.precision_table import precision_order
from utils.run_files import SEGMENT  # noqa: F401 (the task's name, where its summaries are read: re-exported)


@dataclass(frozen=True)
class Method:
    """One distillation method."""
    name: str  # --method=<name>; its file is distill/<name>.py; run names and summaries carry it
    label: str  # legends and tables
    line: object  # matplotlib line style of its learning curves (a name or a dash tuple)
    hatch: str  # bar hatch where bars of several methods stand side by side
    distiller: str  # its Distiller subclass in distill/<name>.py (distill.DISTILLERS)
    doc: str  # what --method's doc says of it (docs/config.md)
    teacher: bool = True  # False: trains without a teacher (none is loaded; no transfer set)
    features: bool = False  # matches the teacher's intermediate feature maps: one teacher, no int8 QAT graph
    per_image: bool = False  # keeps a state per training image (steps take the batch's indices; eager, one process)
    exits: bool = False  # a multi-exit student (models/multi_exit.py: a classifier per stage; evaluate.py --exit)
    tasks: tuple = ("classify",)  # the tasks (TASKS) it serves; --task=segment refuses the others with one line
    # its hyper-parameters, Config fields (config.py declares each, with its default, check and doc): the range
    # tune.py samples, (low, high, log scale), or None where it is not tuned; a field two methods share names
    # the same range in both
    hparams: dict = field(default_factory=dict)
    refuses: dict = field(default_factory=dict)  # {Config field: why}: a set field it cannot train with


TASKS = ("classify", SEGMENT)  # what a model outputs: a class per image, or a class per pixel ([N, C, H, W])
BOTH_TASKS = TASKS  # a per-row loss serves both: a segmentation's labeled pixels are its rows (utils/segmentation.py)
TEMPERATURE = (1.0, 8.0, True)  # T 1-8: Hinton et al. 2015 use 2-20, mdistiller 4
# in sweep order. Ranges span the literature's values: DKD's beta 0.5-16 (Zhao et al. 2022: 1-8), AT's weight
# around mdistiller's 1000, FitNet's around its 100
METHOD_TABLE = (
    Method("ce", "CE control (no teacher)", "--", "", "CE", "no teacher: the control", teacher=False,
           tasks=BOTH_TASKS),
    Method("kd", "KD (Hinton)", "-", "", "KD", "Hinton; on --task=segment at every labeled pixel", tasks=BOTH_TASKS,
           hparams={"temperature": TEMPERATURE, "alpha": (0.0, 1.0, False), "kd_weight": (0.1, 10.0, True),
                    "kd_logit_std": None}),
    Method("dkd", "DKD (decoupled)", "-.", "//", "DKD", "Decoupled KD",
           hparams={"temperature": TEMPERATURE, "dkd_alpha": (0.25, 4.0, True), "dkd_beta": (0.5, 16.0, True),
                    "dkd_beta_per_depth": None, "dkd_warmup": None},
           refuses={"mixup": "DKD's target/non-target split needs one true class per image"}),
    Method("fitnet", "FitNet (hints)", (0, (3, 1, 1, 1, 1, 1)), "xx", "FitNet", "hints", features=True,
           hparams={"fitnet_weight": (1.0, 1e3, True), "fitnet_stage": None}),
    Method("at", "AT (attention transfer)", (0, (5, 2)), "\\\\", "AttentionTransfer", "attention transfer",
           features=True, hparams={"at_weight": (10.0, 1e4, True), "at_p": None}),
    Method("fm", "FM (function matching)", (0, (1, 1)), "++", "FunctionMatching", "function matching",
           hparams={"fm_temperature": (0.5, 8.0, True), "fm_mixup": None}),
    Method("tfkd", "Tf-KD (virtual teacher)", (0, (2, 1)), "--", "TeacherFreeKD",
           "teacher-free KD: a hand-made virtual teacher, Yuan et al. 2020", teacher=False,
           hparams={"tfkd_weight": (0.0, 1.0, False), "tfkd_temperature": (1.0, 40.0, True), "tfkd_prob": None}),
    Method("pskd", "PS-KD (progressive self-KD)", (0, (4, 1, 1, 1, 1, 1)), "||", "ProgressiveSelfKD",
           "progressive self-KD: its own last-epoch predictions, Kim et al. 2021", teacher=False, per_image=True,
           hparams={"pskd_alpha": (0.0, 1.0, False)},
           refuses={"mixup": "PS-KD mixes its own last prediction of an image with that image's one label"}),
    Method("byot", "BYOT (its deepest exit teaches)", (0, (6, 2, 1, 2)), "..", "BeYourOwnTeacher",
           "be your own teacher: an exit per stage, the deepest teaching the rest, Zhang et al. 2019", teacher=False,
           exits=True, hparams={"byot_weight": (0.0, 1.0, False), "byot_temperature": TEMPERATURE,
                                "byot_feature_weight": (1e-3, 1.0, True)},
           refuses={"student_arch": "its exits sit on the ResidualCNN's stages", "mixup": "its exits learn one label"}),
    Method("cwd", "CWD (channel-wise)", (0, (3, 1, 3, 1, 1, 1)), "**", "ChannelWiseKD",
           "channel-wise KD: each class map a softmax over locations, Shu et al. 2021 (--task=segment)",
           tasks=(SEGMENT,), hparams={"cwd_weight": (0.3, 30.0, True), "cwd_temperature": TEMPERATURE}),
    Method("pl", "pseudo-labels (CE on the teacher's argmax)", (0, (5, 1, 1, 1)), "oo", "PseudoLabels",
           "CE with the teacher's argmax as the labels of unlabeled images: the transfer set's control"),
)
METHODS = {m.name: m for m in METHOD_TABLE}
CONTROL = "ce"  # the control every distilled student is compared with: same data, order and schedule, no teacher
DEFAULT_METHOD = "kd"  # --method's default and the sweep's (--sweep_methods)
METHOD_DOC = " | ".join(f"{m.name} ({m.doc})" for m in METHOD_TABLE)  # --method's doc (docs/config.md)


def hparam_methods(name: str) -> tuple:
    """The methods whose hyper-parameter the Config field `name` is (config.py's field metadata)."""
    return tuple(m.name for m in METHOD_TABLE if name in m.hparams)


def method_space() -> dict:
    """{field: (low, high, log)} of every tuned method hyper-parameter, in table order (tune.SPACE)."""
    space = {}
    for m in METHOD_TABLE:
        for name, rng in m.hparams.items():
            if rng is not None and space.setdefault(name, rng) != rng:
                raise ValueError(f"method table: {m.name} gives {name} the range {rng}, another method {space[name]}")
    return space


class MethodLook(NamedTuple):
    label: str  # legends and tables
    line: object  # matplotlib line style of its learning curves (a name or a dash tuple)
    hatch: str  # bar hatch where bars of several methods stand side by side


METHOD_LOOKS = {m.name: MethodLook(m.label, m.line, m.hatch) for m in METHOD_TABLE}  # in sweep order

EARLY_EXIT = "auto"  # evaluate.py --exit=auto: a multi-exit student answers at its first confident exit

# --qat: the weight grid a student trains on (quant/), in table order; bits as the grids' names say
QAT_MODES = ("none", "int8", "int4", "ternary", "binary")
CE_COLOR = "#7f7f7f"  # the CE control: no teacher, fp32
TEACHER_COLOR = "black"


def series_of(method: str, unlabeled: int = 0, generation: int = 0) -> str:
    """A plotted series' name: the method, with its transfer set ("kd+20000u") or its born-again generation
    ("kd+g2") where it has one (series_parts reads it back)."""
    return method + (f"+{unlabeled}u" if unlabeled else "") + (f"+g{generation}" if generation else "")


def series_parts(series: str) -> tuple:
    """(method, unlabeled images, generation) of series_of's name."""
    method, *extras = series.split("+")
    unlabeled = next((int(e[:-1]) for e in extras if e.endswith("u")), 0)
    return method, unlabeled, next((int(e[1:]) for e in extras if e.startswith("g")), 0)


def method_look(method: str) -> MethodLook:
    """The look of a method, or of a series with a transfer set (series_of: dotted, its count named) or of a
    born-again generation (loosely dotted, more loosely each generation)."""
    name, unlabeled, generation = series_parts(method)
    look = METHOD_LOOKS.get(name, MethodLook(name.upper(), ":", ".."))
    if generation:
        return look._replace(label=f"{look.label}, born-again generation {generation}", line=(0, (1, 1 + generation)),
                             hatch="**")
    return look._replace(label=f"{look.label} + {unlabeled:,} unlabeled", line=":") if unlabeled else look


def method_order(method: str) -> int:
    return list(METHOD_LOOKS).index(method) if method in METHOD_LOOKS else len(METHOD_LOOKS)


def grid_order(blocks: int, method: str, precision: str) -> tuple:
    """Sort key of a student group in sweep order: depth, then method, then precision."""
    return blocks, method_order(method), precision_order(precision), method
