"""The sweep's runs: the teacher first, then the students that share a seed and their batches together
(train.train_runs), one group after another, `--workers=N` groups at once in their own processes, or as
Ray tasks (runtime/ray_sweep.py). A complete run is skipped, a partial one resumed; a failure is recorded
in its summary.json and the sweep goes on; a run another process holds (its .lock) is left to it.
"""
import dataclasses
import os
import tempfile
import traceback
from contextlib import nullcontext

import torch
from tqdm import tqdm

import train
from config import Config, config_to_dict, default_run_name
from runtime.run_dir import is_complete, model_arch, model_blocks, run_dir_of
from sweep.plan import student_groups
from sweep.steps import ptq_contrasts
from utils.atomic import atomic_write_json
from utils.errors import UserError, cannot_write, first_line
from utils.lock import RunLocked
from utils.names import CONTROL
from utils.run_files import CONFIG, CorruptCheckpoint, failed_summary, write_summary


def record_failure(cfg: Config, err: BaseException) -> str:
    message = first_line(f"{type(err).__name__}: {err}", 300)
    run_dir = run_dir_of(cfg)
    try:
        write_summary(run_dir, failed_summary(
            error=message, run_name=default_run_name(cfg), role=cfg.role, dataset=cfg.dataset,
            blocks=model_blocks(cfg), arch=model_arch(cfg), precision=cfg.precision,
            method=cfg.method if cfg.role == "student" else CONTROL, seed=cfg.seed,
            **({"qat": cfg.qat} if cfg.qat != "none" else {})))
        if not os.path.isfile(os.path.join(run_dir, CONFIG)):
            atomic_write_json(os.path.join(run_dir, CONFIG), config_to_dict(cfg))
    except OSError as e:
        message += f" (not recorded in summary.json: {e.strerror or e})"
    return message


def _unexpected(err: BaseException) -> bool:
    return not isinstance(err, (UserError, torch.OutOfMemoryError)) and "out of memory" not in str(err).lower()


def _status(cfg: Config, result, explain: bool = True) -> str:
    if not isinstance(result, BaseException):
        return "done"
    if isinstance(result, RunLocked):
        return f"skipped: {result}"
    if explain and _unexpected(result):
        traceback.print_exception(result)  # unexpected: the whole story belongs in the log
    return "failed: " + record_failure(cfg, result)


def _train(cfgs: list) -> list:
    """train.train_runs, where whatever the group raises is each of its runs' failure, never the sweep's end."""
    try:
        return train.train_runs(cfgs)
    except Exception as e:  # noqa: BLE001 (KeyboardInterrupt and SystemExit still stop the sweep)
        return [e] * len(cfgs)


def run_group(cfgs: list) -> list:
    """Train runs that share their batches together (train.train_runs); 'done', 'skipped', 'skipped:
    <who holds it>' or 'failed: <why>' per run, in order. A failure never stops the sweep: it is
    recorded in that run's summary.json, and the group's other runs go on. A run whose checkpoint.pt is
    unreadable starts over, and says so; a run another process holds (its .lock) is left to it."""
    todo = [c for c in cfgs if not is_complete(run_dir_of(c))]
    results = dict(zip(map(id, todo), _train(todo))) if todo else {}
    corrupt = [c for c in todo if isinstance(results[id(c)], CorruptCheckpoint)]
    for c in corrupt:
        tqdm.write(f"{default_run_name(c)}: {results[id(c)]}; starting that run over")
    if corrupt:
        fresh = [dataclasses.replace(c, resume=False) for c in corrupt]
        results.update(zip(map(id, corrupt), _train(fresh)))
    return ["skipped" if id(c) not in results else _status(c, results[id(c)]) for c in cfgs]


def run_one(cfg: Config) -> str:
    return run_group([cfg])[0]


def _run_groups(groups: list, workers: int):
    """(group, statuses) as groups finish: one after another, or `workers` groups at once, each in its
    own process (launch-bound GPU loops leave the GPU mostly idle)."""
    if workers <= 1 or len(groups) <= 1:
        for g in groups:
            yield g, run_group(g)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads,
                             initargs=(max(1, torch.get_num_threads() // workers),)) as pool:
        futures = {pool.submit(run_group, g): g for g in groups}
        for f in as_completed(futures):  # a worker that died (e.g. out of memory) fails its group, not the sweep
            yield futures[f], f.exception() or f.result()


def launcher(base: Config):
    """A context whose value is `run_groups(groups)`, yielding (runs, statuses) as groups finish, where
    statuses may be the exception that ended a Ray task: on this machine (`--workers`), or on Ray."""
    if base.launcher == "ray":
        from runtime.ray_sweep import RaySweep

        return RaySweep(base, run_group)
    return nullcontext(lambda groups: _run_groups(groups, base.workers))


def _statuses(cfgs: list, result) -> list:
    """Each run's status; an error that ended a whole chunk (a --workers process, a Ray task) is told
    once, in full when unexpected, then one line per run."""
    if not isinstance(result, BaseException):
        return result
    if _unexpected(result):
        traceback.print_exception(result)
    return ["done" if is_complete(run_dir_of(c)) else _status(c, result, explain=False) for c in cfgs]


def check_writable(base: Config, runs: list) -> None:
    """Before training anything: an out_dir that cannot take files stops the sweep with one line (every
    run would fail the same way). A finished sweep needs no write and reruns even read-only."""
    try:
        os.makedirs(base.out_dir, exist_ok=True)
        if any(not is_complete(run_dir_of(c)) for c in runs):
            tempfile.TemporaryFile(dir=base.out_dir).close()
    except OSError as e:
        raise cannot_write(e, base.out_dir) from None


def run_grid(base: Config, runs: list) -> tuple:
    """Train the grid, one progress line per run; (failed run names, skipped run names, stopped: whether the
    teacher failed or was held, so no student ran)."""
    failed, skipped, done = [], [], 0
    bar = tqdm(total=len(runs), desc="sweep", unit="run", dynamic_ncols=True)

    def report(cfg, status):
        nonlocal done
        done += 1
        bar.update(1)
        name = default_run_name(cfg)
        if status.startswith("failed"):
            failed.append(name)
        if status.startswith("skipped: "):
            skipped.append(name)
        tqdm.write(f"[{done}/{len(runs)}] {name}: {status}")

    teachers = [c for c in runs if c.role == "teacher"]
    students = [c for c in runs if c.role == "student"]
    stopped = False
    with launcher(base) as run_groups:
        for teacher in teachers:  # first: the students learn from it
            bar.set_postfix_str(default_run_name(teacher))
            for group, result in run_groups([[teacher]]):
                status = _statuses(group, result)[0]
                report(teacher, status)
                stopped = status.startswith(("failed", "skipped: "))
            if stopped:
                tqdm.write(f"{default_run_name(teacher)}: the students need the finished teacher, stopping the sweep")
                students = []
        # QAT runs start from finished fp32 students: those train first, then their PTQ contrasts are built; a
        # born-again generation learns from the one before, which has finished in the phase before
        quantized = [c for c in students if c.qat != "none"]
        plain = [c for c in students if c.qat == "none"]
        generations = [[c for c in plain if c.generation == g] for g in range(base.sweep_generations + 1)]
        for phase in (*generations, quantized):
            if phase is quantized and phase:
                ptq_contrasts(base, phase)
            bar.set_postfix_str("QAT students" if phase is quantized else "students")
            for group, result in run_groups(student_groups(phase)):
                for cfg, st in zip(group, _statuses(group, result)):
                    report(cfg, st)
    bar.close()
    return failed, skipped, stopped
