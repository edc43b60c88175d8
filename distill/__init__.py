"""How a student learns from a teacher. One file per method, each a pure loss function plus a thin
Distiller; the registry below maps config.METHODS to them (a test pins the two together)."""
from distill.at import AttentionTransfer
from distill.base import Distiller, TeacherOut  # noqa: F401
from distill.ce import CE
from distill.dkd import DKD
from distill.fitnet import FitNet
from distill.fm import FunctionMatching
from distill.kd import KD
from distill.pl import PseudoLabels

DISTILLERS = {
    "ce": CE,
    "kd": KD,
    "dkd": DKD,
    "fitnet": FitNet,
    "at": AttentionTransfer,
    "fm": FunctionMatching,
    "pl": PseudoLabels,
}


def method_of(cfg) -> str:
    """The method a run learns with: cfg.method for a student, always CE for a teacher run."""
    return "ce" if cfg.role == "teacher" else cfg.method


def needs_teacher(cfg) -> bool:
    return DISTILLERS[method_of(cfg)].uses_teacher


def build_distiller(cfg, student, teacher=None, input_shape=None) -> Distiller:
    """The distiller of the run's method around `student`; `teacher` and the input shape (C, H, W) for
    methods that size an adapter or pair feature maps."""
    return DISTILLERS[method_of(cfg)](student, cfg, teacher, input_shape)
