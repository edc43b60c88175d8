"""The sweep's grid: the teacher, then per depth, seed and precision the CE control and every method, then
the QAT runs; one frozen config per run, nothing global mutated. Torch-free: the one step that needs the
device (what fp16 and auto become on it, shown in the run's name) is `resolve`, on_device unless a caller
passes its own, and imports torch only when called.
"""
import dataclasses
import os

from cli import group_key
from config import RECIPES, Config, run_dir_of
from utils.names import CONTROL, DEFAULT_METHOD, METHODS
from utils.precision_table import FP32, on_cpu, sweep_optimizer
from utils.run_files import size_folder


def on_device(cfg: Config) -> Config:
    """A student's precision as --device runs it: fp16 on a CPU becomes --fp16_on_cpu's choice (the precision
    table's on_cpu, with a note and substituted_for), and auto is chosen by measurement (runtime/auto_precision.py)."""
    from runtime.auto_precision import resolve_auto
    from utils.device import resolve_device

    device = resolve_device(cfg.device)
    precision, note, substituted = on_cpu(cfg.precision, device.type, cfg.fp16_on_cpu)
    cfg = dataclasses.replace(cfg, precision=precision, precision_note=note, substituted_for=substituted)
    return resolve_auto(cfg, device)  # auto's choice shows in the run's name


def teacher_config(base: Config) -> Config:
    """The sweep's teacher run: the students' settings, then teacher_recipe's, then the teacher_* fields."""
    recipe = RECIPES[base.teacher_recipe] if base.teacher_recipe else {}
    cfg = dataclasses.replace(base, **recipe)
    return dataclasses.replace(cfg, role="teacher", method=CONTROL, precision=FP32, seed=0, run_name="",
                               unlabeled_samples=0, resume=True, qat="none", init_from="",
                               optimizer="adam" if cfg.optimizer == "adam8bit" else cfg.optimizer,
                               epochs=base.teacher_epochs or base.epochs,
                               max_train_samples=base.teacher_train_samples or base.max_train_samples)


def student_config(base: Config, blocks: int, precision: str, method: str, seed: int, resolve=on_device) -> Config:
    """One student of the grid. The CE control and the teacher-free methods never take the transfer set (no teacher
    labels it)."""
    opt = sweep_optimizer(precision, base.optimizer)  # the precision table's: fp8 keeps 8-bit optimizer state too
    unlabeled = base.unlabeled_samples if METHODS[method].teacher else 0  # (the CE control, teacher-free methods)
    epochs, warmup = base.epochs, base.warmup_epochs
    if unlabeled and base.transfer_epochs:  # the warm-up keeps its share of the run
        epochs, warmup = base.transfer_epochs, base.warmup_epochs * base.transfer_epochs / base.epochs
    cfg = dataclasses.replace(base, role="student", blocks=blocks, precision=precision, method=method,
                              seed=seed, optimizer=opt, run_name="", resume=True, fc_layers=None,
                              precision_note="", substituted_for="", unlabeled_samples=unlabeled, generation=0,
                              epochs=epochs, warmup_epochs=warmup,
                              qat="none", init_from="", qat_epochs=0, qat_lr=0.0)  # qat_runs sets them for QAT runs
    return resolve(cfg)


def grid(base: Config, resolve=on_device) -> list:
    """Every run of the sweep in order: the teacher first (none when --teacher_checkpoint names a trained one,
    e.g. a released teacher under teachers/), then per depth, seed and precision the CE control and the students:
    a control runs in the precision of the students it controls, so every gain stays paired."""
    # a sweep of teacher-free methods alone trains no teacher (of CE controls alone, one for the table)
    needed = not base.sweep_methods or any(METHODS[m].teacher for m in base.sweep_methods)
    runs = [] if base.teacher_checkpoint or not needed else [teacher_config(base)]
    # a timm student (--student_arch) has no depth to sweep: one student per seed and method
    for blocks in (base.sweep_blocks if not base.student_arch else (base.blocks,)):
        for seed in range(base.first_seed, base.first_seed + base.seeds):
            paired = base.sweep_precisions if base.sweep_methods else ()
            for p in paired or (FP32,):  # no method or no precision: the fp32 CE controls alone
                runs += [student_config(base, blocks, p, m, seed, resolve)
                         for m in (CONTROL, *(base.sweep_methods if paired else ()))]
    runs += generation_runs(base, resolve) + qat_runs(base, resolve)
    unique = {}  # e.g. --sweep_precisions=[fp32,auto] where auto chose fp32: one run, not two
    for c in runs:
        unique.setdefault(run_dir_of(c), c)
    return list(unique.values())


def first_method(base: Config) -> str:
    """The sweep method the QAT runs and the born-again generations learn with: the first one."""
    return base.sweep_methods[0] if base.sweep_methods else DEFAULT_METHOD


def generation_runs(base: Config, resolve=on_device) -> list:
    """--sweep_generations: per depth and seed, born-again generations 1..N of the first sweep method in the first
    sweep precision, generation g taught by generation g - 1 of the same depth and seed (generation 0: that
    precision's CE control)."""
    runs, method, p = [], first_method(base), (*base.sweep_precisions, FP32)[0]
    for blocks in base.sweep_blocks if base.sweep_generations else ():
        for seed in range(base.first_seed, base.first_seed + base.seeds):
            before = student_config(base, blocks, p, CONTROL, seed, resolve)
            for g in range(1, base.sweep_generations + 1):
                before = dataclasses.replace(student_config(base, blocks, p, method, seed, resolve), generation=g,
                                             teacher_checkpoint=run_dir_of(before), unlabeled_samples=0)
                runs.append(before)
    return runs


def qat_runs(base: Config, resolve=on_device) -> list:
    """--sweep_qat: per depth, seed and grid a QAT-CE and a QAT-KD run (KD: the first sweep method), both
    started from that seed's fp32 student of the first sweep method (added when the grid lacks it)."""
    runs, method = [], first_method(base)
    for blocks in base.sweep_blocks if base.sweep_qat else ():
        for seed in range(base.first_seed, base.first_seed + base.seeds):
            init = student_config(base, blocks, FP32, method, seed, resolve)
            runs.append(init)
            for mode in base.sweep_qat:
                runs += [dataclasses.replace(student_config(base, blocks, FP32, m, seed, resolve), qat=mode,
                                             init_from=run_dir_of(init), optimizer=init.optimizer,
                                             qat_epochs=base.qat_epochs, qat_lr=base.qat_lr)
                         for m in (CONTROL, method)]
    return runs


def student_groups(students: list) -> list:
    """The students in groups that share data order, batches and teacher (cli.group_key), in grid order."""
    groups = {}
    for cfg in students:
        groups.setdefault(group_key(cfg), []).append(cfg)
    return list(groups.values())


def size_configs(base: Config) -> list:
    """--sweep_train_samples: one sweep per labeled size, in its own folder (<out_dir>/n<N>, all/ for 0), each
    with its own CE controls, table and plots; its epochs from --sweep_train_epochs; sizes above
    --scale_deep_upto train only the first depth. Every size learns from the same teacher."""
    sizes, epochs = base.sweep_train_samples, base.sweep_train_epochs or (base.epochs,) * len(base.sweep_train_samples)
    deep = lambda n: not base.scale_deep_upto or 0 < n <= base.scale_deep_upto  # noqa: E731
    return [dataclasses.replace(base, sweep_train_samples=(), sweep_train_epochs=(), max_train_samples=n, epochs=e,
                                sweep_blocks=base.sweep_blocks if deep(n) else base.sweep_blocks[:1],
                                out_dir=os.path.join(base.out_dir, size_folder(n))) for n, e in zip(sizes, epochs)]
