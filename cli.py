"""The machinery under config.py's one declaration per field, knowing no field itself: the field factory and
its checks, the check of a built dataclass, `--field=value` parsing, --help, and run names.

A field is declared once, `blocks: int = knob("train")(4, must(lambda v: 1 <= v <= 64, "in 1..64"), doc=...)`:
its metadata carries its scope, methods, check, group, docs section and doc; validation, --help, the sweep's
groups and docs/config.md read it. Each `--field=value` is parsed as a Python literal where it is one, else
kept as a string (nanoGPT's configurator). config.py re-exports what its callers use; this module imports
no project module above presets and utils/.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import os
import re
import textwrap
import typing
from typing import Callable, NamedTuple

from presets import PRESETS, RECIPES
from utils.errors import HelpRequested, UserError
from utils.precision_table import AUTO
from utils.run_files import (CONFIG, GENERATION_PART, QAT_PART, STUDENT_RUN_NAME, TEACHER_RUN_NAME, TEACHER_SEED_PART,
                             UNLABELED_PART)


class Check(NamedTuple):
    """What a field's value must pass, and what the one error line says when it does not: `--name=value: says`."""
    test: Callable
    says: str
    show_repr: bool = False  # the message shows the value as repr (lists and tuples)


def one_of(*values, blank_ok: bool = False) -> Check:
    """One of `values` (or "" where blank_ok: "" then means a default the field's doc names)."""
    return Check(lambda v: (blank_ok and v == "") or v in values, f"allowed values are {', '.join(values)}")


def each_of(*values) -> Check:
    """A tuple field whose every item is one of `values`."""
    return Check(lambda v: all(x in values for x in v), f"allowed values are {', '.join(values)}", True)


def must(test: Callable, text: str) -> Check:
    """A range beyond the sign, stated as the message states it: `must be {text}`."""
    return Check(test, f"must be {text}")


POSITIVE = Check(lambda v: v > 0, "must be a positive number")
NON_NEGATIVE = Check(lambda v: v >= 0, "must not be negative")
UNIT_INTERVAL = must(lambda v: 0 <= v <= 1, "in [0, 1]")
DEVICE = Check(lambda v: v in (AUTO, "cpu", "cuda", "mps") or v.startswith("cuda:"),  # auto: cuda if present
               "allowed values are auto, cpu, cuda, cuda:N, mps")
# what a run directory's name may hold: a name that is a path would put a run, and its fresh start's deletions,
# outside out_dir
RUN_NAME = re.compile(r"[A-Za-z0-9._+-]+")
PLAIN_NAME = must(lambda v: v == "" or (RUN_NAME.fullmatch(v) is not None and v not in (".", "..")),
                  "a plain folder name (letters, digits, . _ - +), not a path; \"\" = derived")


def positive_ints(example: str, bools: bool = False, most: int = None) -> Check:
    """A tuple of positive ints (sweep_blocks has always taken True, as 1: bools=True keeps that), each at most
    `most` where given."""
    return Check(lambda v: all(isinstance(x, int) and (bools or not isinstance(x, bool)) and 0 < x <= (most or x)
                               for x in v), f"expected a list of positive ints{f' up to {most}' if most else ''}, "
                                            f"e.g. {example}", True)


def non_negative_ints(example: str) -> Check:
    return Check(lambda v: all(type(x) is int and x >= 0 for x in v), f"expected a list of ints >= 0, e.g. {example}",
                 True)


MAX_EPOCHS = 100_000  # a sane ceiling: Beyer et al. 2022's longest function-matching schedules are 10,000 epochs
EPOCHS = must(lambda v: 1 <= v <= MAX_EPOCHS, f"in 1..{MAX_EPOCHS}")
EPOCHS_OR_0 = must(lambda v: 0 <= v <= MAX_EPOCHS, f"in 0..{MAX_EPOCHS} (0 = epochs)")


def knob(scope: str, recipe: bool = False):
    """The field factory of one scope. check: a Check or None; methods: the distillation methods a hyper-parameter
    belongs to; group: students trained together in one group must share it; section: the docs section this field
    opens; doc: its one line in docs/config.md and --help. recipe: a recipe (--recipe=NAME or @file) may set the
    field: it says how a run learns, not what data, model, seed or folder it has; a method's hyper-parameters
    always may."""
    def make(default, check: Check = None, *, methods: tuple = (), group: bool = False, section: str = "",
             doc: str = ""):
        if not (check is None or isinstance(check, Check)):
            raise TypeError(f"a field's check is a cli.Check or None, not {check!r} (methods=, doc= are keywords)")
        return dataclasses.field(default=default, metadata={"scope": scope, "methods": methods, "check": check,
                                                             "group": group, "section": section, "doc": doc,
                                                             "recipe": recipe or bool(methods)})
    return make


@functools.lru_cache(maxsize=None)
def field_types(schema) -> dict:
    return typing.get_type_hints(schema)


def _type_name(tp) -> str:
    return "True or False" if tp is bool else getattr(tp, "__name__", str(tp).replace("typing.", ""))


def check_field(name: str, tp, value, check: Check = None) -> None:
    """One field's value: its type, then finiteness (no nan, no inf in a float field), then its declared check."""
    if typing.get_origin(tp) is typing.Union:  # Optional[tuple]
        if value is None:
            return
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    ok = (isinstance(value, tp) and not (tp is int and isinstance(value, bool))) \
        or (tp is float and isinstance(value, int) and not isinstance(value, bool))
    if tp is tuple and isinstance(value, list):
        ok = True
    if not ok:
        raise UserError(f"--{name}={value!r}: expected {_type_name(tp)}")
    if tp is float and not math.isfinite(value):
        raise UserError(f"--{name}={value}: must be a finite number")
    if check and not check.test(value):
        raise UserError(f"--{name}={repr(value) if check.show_repr else value}: {check.says}")


def check_fields(obj) -> None:
    """Check every field of a frozen dataclass `obj` when it is built, before any data loads; lists become
    tuples and the ints of float fields floats. The first bad field raises a UserError naming it."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        check_field(f.name, types[f.name], value, f.metadata["check"])
        if isinstance(value, list):
            object.__setattr__(obj, f.name, tuple(value))
        elif types[f.name] is float and isinstance(value, int):
            object.__setattr__(obj, f.name, float(value))


def fields_in_scope(schema, *scopes: str) -> tuple:
    """Names of the fields of `schema` whose scope is one of `scopes`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(schema) if f.metadata["scope"] in scopes)


def method_hparams(cfg, method: str) -> dict:
    """{field: value} of the hyper-parameters that belong to `method` (what summaries record)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if method in f.metadata["methods"]}


def config_to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(schema, d: dict, source: str = ""):
    """Rebuild a `schema` dataclass from config.json (`source`, named in errors); fields this version does not
    know are ignored. A file that is no object, or a value of the wrong type or range, is one line naming the
    file and the field: the file's fault, not a flag's."""
    where = source or CONFIG
    if not isinstance(d, dict):
        raise UserError(f"{where}: not a JSON object of config fields (found {type(d).__name__})")
    names = {f.name for f in dataclasses.fields(schema)}
    try:
        return schema(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})
    except UserError as e:
        text = str(e)
        raise UserError(f"{where}: field {text[2:] if text.startswith('--') else text}") from None


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_value(tp, text: str):
    """The text of `--field=text` as a value of the field's type `tp` (checked later, when the Config is built)."""
    if tp is str:
        return text  # never literal-eval a string field: --run_name=123 stays "123"
    if bool in (tp, *typing.get_args(tp)) and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"  # --resume=true as --resume=True
    is_tuple = tp is tuple or (typing.get_origin(tp) is typing.Union and tuple in typing.get_args(tp))
    if not text.strip():
        return () if is_tuple else text  # --sweep_methods= is (); --lr= is '', which the type check names
    if tp is float:
        try:
            return float(text)  # also inf and nan, which the range check then names
        except ValueError:
            pass
    value = _literal(text)
    if isinstance(value, str) and text.strip()[:1] in ("[", "(") and text.strip()[-1:] in (")", "]"):
        value = [_literal(v.strip()) for v in text.strip()[1:-1].split(",") if v.strip()]  # [fp32,fp8]
    if is_tuple:
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = (value,)  # --sweep_blocks=4 means (4,); --sweep_precisions=fp8 means ("fp8",)
        if isinstance(value, list):
            value = tuple(value)
    return value


def usage(schema) -> str:
    """What -h / --help prints after the script's own docstring: the commands, presets, and every field of
    `schema` with its default, by docs section (each field's meaning, unit and check: docs/config.md)."""
    presets = "\n".join(f"  {name:6} " + " ".join(f"{k}={v}" for k, v in p.items()) for name, p in PRESETS.items())
    sections, section = {}, ""
    for f in dataclasses.fields(schema):
        section = f.metadata["section"] or section
        shown = f.default if isinstance(f.default, str) and f.default else repr(f.default).replace("'", '"')
        sections.setdefault(section, []).append(f"{f.name}={shown}")
    fields = "\n".join(textwrap.fill(" ".join(names), 116, initial_indent=f"  {section}: ", subsequent_indent="    ")
                       for section, names in sections.items())
    return ("Commands:\n  python train.py --role=teacher\n  python train.py --blocks=4 --method=kd --precision=bf16\n"
            "  python run_experiments.py --preset=demo\n  python evaluate.py --run=checkpoints/<run_name>\n"
            "  python plot_experiment_results.py --preset=demo\n"
            "Options: --field=value for any config field; every field with its default, unit and meaning is\n"
            "listed in docs/config.md (generated from config.py). --recipe=NAME applies a named\n"
            f"recipe from the literature ({', '.join(RECIPES)}). --preset=NAME sets:\n" + presets +
            "\nFields, with their defaults:\n" + fields)


def parse_overrides(argv: list[str], schema) -> dict:
    """`--field=value` strings -> {field: value} for the dataclass `schema`: the preset first, then the recipe,
    then overrides in order. -h or --help anywhere raises HelpRequested (the script prints its usage, exits 0)."""
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(usage(schema))
    types = field_types(schema)
    preset, recipe, overrides = None, None, {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"{arg}: expected --field=value (e.g. --blocks=6); see docs/config.md for every field")
        key, text = arg[2:].split("=", 1)
        if key == "recipe" and text.startswith("@"):  # a recipe file, e.g. the one tune.py writes
            recipe = read_recipe_file(text[1:], schema)
            continue
        if key in ("preset", "recipe"):
            table = PRESETS if key == "preset" else RECIPES
            if text not in table:
                raise UserError(f"--{key}={text}: allowed values are {', '.join(table)}")
            preset, recipe = (text, recipe) if key == "preset" else (preset, text)
            continue
        if key not in types:
            raise UserError(f"--{key}: unknown config field (fields are listed in docs/config.md)")
        overrides[key] = parse_value(types[key], text)
    merged = dict(PRESETS[preset]) if preset else {}
    merged.update((RECIPES[recipe] if isinstance(recipe, str) else recipe) if recipe else {})
    merged.update(overrides)
    return merged


def make_config(schema, argv: list[str] = None, **fields):
    """Defaults <- preset <- CLI overrides <- keyword fields; returns one frozen `schema` dataclass."""
    return schema(**{**parse_overrides(list(argv or []), schema), **fields})


def read_recipe_file(path: str, schema) -> dict:
    """--recipe=@path: a JSON object of config fields (tune.py writes one), applied like a named recipe. Only
    fields declared recipe=True (how a run learns): a file never sets where a run writes, whether it replaces a
    finished one, or its data, model and seed. Each value is checked here, so a bad one names the file."""
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--recipe=@{path}: cannot read a JSON recipe ({e})") from None
    fields = fields.get("fields", fields) if isinstance(fields, dict) else fields
    if not isinstance(fields, dict):
        raise UserError(f"--recipe=@{path}: not a JSON object of config fields")
    declared = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(fields) - set(declared))
    if unknown:
        raise UserError(f"--recipe=@{path}: unknown config fields {', '.join(unknown)}")
    barred = sorted(k for k in fields if not declared[k].metadata["recipe"])
    if barred:
        raise UserError(f"--recipe=@{path}: sets {', '.join(barred)}, which a recipe may not: a recipe sets how a "
                        f"run learns (method and its hyper-parameters, optimisation, schedule, augmentation); pass "
                        f"the others as flags")
    types = field_types(schema)
    for k, v in fields.items():
        try:
            check_field(k, types[k], v, declared[k].metadata["check"])
        except UserError as e:  # `--temperature='hot': ...` would blame a flag the user never passed
            raise UserError(f"--recipe=@{path}: field {str(e)[2:]}") from None
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def arch_name(arch: str) -> str:
    """An architecture as run names and tables spell it: timm:resnet10t -> timm-resnet10t (':' is no path character)."""
    return arch.replace(":", "-")


def student_name(cfg) -> str:
    """The student model: res{blocks} (the ResidualCNN family), or timm-<name> for --student_arch=timm:<name>."""
    return arch_name(cfg.student_arch) if cfg.student_arch else f"res{cfg.blocks}"


def teacher_run_name(cfg, seed: int = 0) -> str:
    """The teacher's run directory (utils/run_files.TEACHER_RUN_NAME); a seed other than 0 is an ensemble's
    further member (make teacher trains two)."""
    return TEACHER_RUN_NAME.format(dataset=cfg.dataset, arch=arch_name(cfg.teacher_arch),
                                   seed=TEACHER_SEED_PART.format(seed) if seed else "")


def default_run_name(cfg) -> str:
    """Like the original's res4_b224_fp16, plus dataset, method, transfer set, QAT grid, born-again generation and
    seed (the pattern: utils/run_files.STUDENT_RUN_NAME)."""
    if cfg.run_name:
        return cfg.run_name
    if cfg.role == "teacher":
        return teacher_run_name(cfg, cfg.seed)
    qat = getattr(cfg, "qat", "none")
    return STUDENT_RUN_NAME.format(
        dataset=cfg.dataset, student=student_name(cfg), batch_size=cfg.batch_size, precision=cfg.precision,
        method=cfg.method, unlabeled=UNLABELED_PART.format(cfg.unlabeled_samples) if cfg.unlabeled_samples else "",
        qat=QAT_PART.format(qat) if qat != "none" else "",
        generation=GENERATION_PART.format(cfg.generation) if getattr(cfg, "generation", 0) else "", seed=cfg.seed)


def group_key(cfg) -> tuple:
    """What students must share to be trained together on the same batches (one batch order, one teacher
    forward): their fields declared group=True (Config.group_fields). train.py and the sweep's groups use it."""
    return tuple(getattr(cfg, name) for name in type(cfg).group_fields())


def run_dir_of(cfg) -> str:
    """out_dir/<run name>: the run's own --run_name, else its default name (utils/run_files.STUDENT_RUN_NAME)."""
    return os.path.join(cfg.out_dir, default_run_name(cfg))
