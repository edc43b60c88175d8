"""How a student learns from a teacher. One file per method, distill/<name>.py, each a pure loss function plus a
thin Distiller; the method table (utils/names.py) names each one's Distiller class, and DISTILLERS is built
from it, in table order."""
import importlib

from distill.base import Distiller, TeacherOut  # noqa: F401
from utils.names import CONTROL, METHODS

DISTILLERS = {name: getattr(importlib.import_module(f"distill.{name}"), m.distiller) for name, m in METHODS.items()}


def method_of(cfg) -> str:
    """The method a run learns with: cfg.method for a student, always the CE control for a teacher run."""
    return CONTROL if cfg.role == "teacher" else cfg.method


def needs_teacher(cfg) -> bool:
    return METHODS[method_of(cfg)].teacher


def build_distiller(cfg, student, teacher=None, input_shape=None) -> Distiller:
    """The distiller of the run's method around `student`; `teacher` and the input shape (C, H, W) for
    methods that size an adapter or pair feature maps."""
    return DISTILLERS[method_of(cfg)](student, cfg, teacher, input_shape)
