"""The values a Config field may take where they are more than a range: the tasks, dataset and architecture names,
the deployment variants, and the checks of the fields that take them (config.py declares the fields and re-exports
these)."""
import re

from cli import Check, must
from config_rules import MASK_DATASETS, MAX_SEED, SEG_PATTERN  # noqa: F401 (re-exported)
from utils.names import EARLY_EXIT, TASKS  # noqa: F401 (re-exported)
from utils.precision_table import BF16, FP16, FP32

DATASETS = ("fashion-mnist", "intel", "imagefolder", "cifar10", "cifar100", *MASK_DATASETS)
CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")  # He et al. 2016, 6n+2 layers
TORCHVISION_TEACHERS = ("resnet18", "resnet50", "efficientnet_b0")  # ImageNet-style backbones
WRN_PATTERN = re.compile(r"wrn(\d+)_(\d+)$")  # wide ResNet wrn{depth}_{k}, depth 6n+4 (wrn16_4, wrn28_10)
TIMM_PREFIX = "timm:"  # timm:<name>: any timm model by name, as a teacher or a student (models/timm_models.py)
TIMM_PATTERN = re.compile(r"timm:[A-Za-z0-9_.-]+$")  # the name itself is checked against timm when the model is built
TEACHER_ARCHS = ("seed12", *CIFAR_RESNETS, "wrn{depth}_{k}", *TORCHVISION_TEACHERS, "resseg{blocks}_{width}",
                 "timm:<name>")
DEPLOY_VARIANTS = (FP32, "fp32-compiled", BF16, FP16, "int8", "fp8-weights", "int8-head-bnb",
                   "nf4-head-bnb", "onnx", "onnx-int8")

SEED = must(lambda v: 0 <= v <= MAX_SEED, f"in 0..{MAX_SEED} (2**32 - 1: numpy's seed range)")


def _seg_arch(v: str) -> bool:
    m = SEG_PATTERN.match(v)
    return m is not None and 1 <= int(m[1]) <= 64 and 1 <= int(m[2]) <= 4096


TEACHER_ARCH = Check(lambda v: v in TEACHER_ARCHS[:-1] or TIMM_PATTERN.match(v) or _seg_arch(v) or (
    (m := WRN_PATTERN.match(v)) is not None and int(m[1]) >= 10 and (int(m[1]) - 4) % 6 == 0 and int(m[2]) >= 1),
    f"allowed values are {', '.join(TEACHER_ARCHS)} (depth 6n+4, e.g. wrn16_4; resseg6_24)")
EXIT = Check(lambda v: v in ("", EARLY_EXIT) or (v.isdigit() and int(v) >= 1), f'"" (the deepest), {EARLY_EXIT}, or an '
             f'exit number from 1, e.g. --exit=1')
STUDENT_ARCH = Check(lambda v: not v or TIMM_PATTERN.match(v),
                     'expected "" (the ResidualCNN of --blocks) or timm:<name>, e.g. timm:mobilenetv3_small_050')
BETA_PER_DEPTH = Check(lambda v: all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int)
                                     and p[0] > 0 and isinstance(p[1], (int, float)) and p[1] >= 0 for p in v),
                       "expected [[blocks, beta], ...], e.g. [[4,2],[6,4]]", True)
SCENE_CANVAS = Check(lambda v: len(v) == 2 and all(isinstance(s, int) and 28 <= s <= 1024 for s in v),
                     "expected [height, width] in px, each 28..1024 (a garment is 28 px), e.g. [64,84]", True)
