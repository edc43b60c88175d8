"""The sweep: teacher once, then students over blocks x precision x method x seed, plus a CE control per depth.

    python run_experiments.py --preset=demo
    python run_experiments.py --preset=smoke --seeds=2
    python run_experiments.py --sweep_blocks=[4,8] --sweep_precisions=[fp32,fp8] --deploy=True

One frozen config per grid point; nothing global is mutated. The teacher trains first; then the
students that share a seed and their batches train together (train.train_runs: each batch made once,
the teacher's outputs for it computed once, every student stepping on it), one group after another
or `--workers=N` groups at once in their own processes, or as Ray tasks across GPUs and nodes
(`--launcher=ray`, runtime/ray_sweep.py). Rerunning the same command skips complete runs
(files untouched), continues partial ones from checkpoint.pt and runs the rest. A failed run is
recorded (summary.json status "failed") and the sweep goes on; the exit code is 1 at the end if any
run failed. A run another process holds (run_dir/.lock) is skipped and named; a run whose checkpoint.pt
is unreadable starts over. Aggregates: out_dir/results.csv and results.md (rewritten only when they
change, so a finished sweep reruns in a read-only out_dir).
"""
import dataclasses
import os
import sys
import tempfile
import traceback
from contextlib import nullcontext

import torch
from tqdm import tqdm

import evaluate
import train
from config import RECIPES, Config, config_to_dict, default_run_name, make_config
from runtime import torchrun
from runtime.run_dir import is_complete, model_arch, model_blocks, run_dir_of
from utils.atomic import atomic_write_json
from runtime.auto_precision import resolve_auto
from utils.device import resolve_device
from utils.errors import UserError, cannot_write, cli_entry, first_line
from utils.lock import RunLocked, table_lock
from utils.names import CONTROL, DEFAULT_METHOD
from utils.precision_table import FP32, on_cpu, sweep_optimizer
from utils.results import collect_results, results_text, selection_acc, write_results
from utils.run_files import CONFIG, CorruptCheckpoint, failed_summary, read_summary, size_folder, write_summary
from utils.scale_report import write_scale_report
from utils.tensorboard import write_hparams


def teacher_config(base: Config) -> Config:
    """The sweep's teacher run: the students' settings, then teacher_recipe's, then the teacher_* fields."""
    recipe = RECIPES[base.teacher_recipe] if base.teacher_recipe else {}
    cfg = dataclasses.replace(base, **recipe)
    return dataclasses.replace(cfg, role="teacher", method=CONTROL, precision=FP32, seed=0, run_name="",
                               unlabeled_samples=0, resume=True, qat="none", init_from="",
                               optimizer="adam" if cfg.optimizer == "adam8bit" else cfg.optimizer,
                               epochs=base.teacher_epochs or base.epochs,
                               max_train_samples=base.teacher_train_samples or base.max_train_samples)


def student_config(base: Config, blocks: int, precision: str, method: str, seed: int) -> Config:
    """One student of the grid. The CE control never takes the transfer set (it has no teacher to label it)."""
    opt = sweep_optimizer(precision, base.optimizer)  # the precision table's: fp8 keeps 8-bit optimizer state too
    unlabeled = 0 if method == CONTROL else base.unlabeled_samples
    epochs, warmup = base.epochs, base.warmup_epochs
    if unlabeled and base.transfer_epochs:  # the warm-up keeps its share of the run
        epochs, warmup = base.transfer_epochs, base.warmup_epochs * base.transfer_epochs / base.epochs
    precision, note, substituted = on_cpu(precision, resolve_device(base.device).type, base.fp16_on_cpu)
    cfg = dataclasses.replace(base, role="student", blocks=blocks, precision=precision, method=method,
                              seed=seed, optimizer=opt, run_name="", resume=True, fc_layers=None,
                              precision_note=note, substituted_for=substituted, unlabeled_samples=unlabeled,
                              epochs=epochs, warmup_epochs=warmup,
                              qat="none", init_from="", qat_epochs=0, qat_lr=0.0)  # qat_runs sets them for QAT runs
    return resolve_auto(cfg, resolve_device(base.device))  # auto's choice shows in the run's name


def grid(base: Config) -> list:
    """Every run of the sweep in order: the teacher first (none when --teacher_checkpoint names a trained one,
    e.g. a released teacher under teachers/), then per depth and seed the CE control and the students."""
    runs = [] if base.teacher_checkpoint else [teacher_config(base)]
    # a timm student (--student_arch) has no depth to sweep: one student per seed and method
    for blocks in (base.sweep_blocks if not base.student_arch else (base.blocks,)):
        for seed in range(base.first_seed, base.first_seed + base.seeds):
            runs.append(student_config(base, blocks, FP32, CONTROL, seed))
            for method in base.sweep_methods:
                runs += [student_config(base, blocks, p, method, seed) for p in base.sweep_precisions]
    runs += qat_runs(base)
    unique = {}  # e.g. --sweep_precisions=[fp32,auto] where auto chose fp32: one run, not two
    for c in runs:
        unique.setdefault(run_dir_of(c), c)
    return list(unique.values())


def qat_runs(base: Config) -> list:
    """--sweep_qat: per depth, seed and grid a QAT-CE and a QAT-KD run (KD: the first sweep method), both
    started from that seed's fp32 student of the first sweep method (added when the grid lacks it)."""
    runs = []
    method = base.sweep_methods[0] if base.sweep_methods else DEFAULT_METHOD
    for blocks in base.sweep_blocks if base.sweep_qat else ():
        for seed in range(base.first_seed, base.first_seed + base.seeds):
            init = student_config(base, blocks, FP32, method, seed)
            runs.append(init)
            for mode in base.sweep_qat:
                runs += [dataclasses.replace(student_config(base, blocks, FP32, m, seed), qat=mode,
                                             init_from=run_dir_of(init), optimizer=init.optimizer,
                                             qat_epochs=base.qat_epochs, qat_lr=base.qat_lr)
                         for m in (CONTROL, method)]
    return runs


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


def student_groups(students: list) -> list:
    """The students in groups that share data order, batches and teacher (train.group_key), in grid order."""
    groups = {}
    for cfg in students:
        groups.setdefault(train.group_key(cfg), []).append(cfg)
    return list(groups.values())


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


def ptq_contrasts(base: Config, quantized: list) -> None:
    """Post-training quantization of each finished fp32 student the QAT runs start from, at their grids
    (deploy/qat.py): <init run>/ptq.json, the PTQ rows of the quantized table."""
    from deploy.qat import ptq_contrasts_of_run

    inits = {}
    for c in quantized:
        inits.setdefault(c.init_from, set()).add(c.qat)
    for init_dir, modes in tqdm(sorted(inits.items()), desc="PTQ", unit="run"):
        if is_complete(init_dir):
            ptq_contrasts_of_run(init_dir, [m for m in base.sweep_qat if m in modes])


def deploy_finished(base: Config, runs: list) -> None:
    from deploy.variants import deploy_run_dir

    for cfg in tqdm(runs, desc="deploy", unit="run"):
        if is_complete(run_dir_of(cfg)) and cfg.qat == "none":  # a QAT run ships its own file (evaluate.py times it)
            deploy_run_dir(run_dir_of(cfg), base)


def evaluate_best_student(runs: list) -> None:
    """evaluation.json + confusion matrix of the most accurate student (the plots show it), chosen on
    the validation accuracy where the runs have one (never on test when they do)."""
    summaries = [(read_summary(run_dir_of(c)), run_dir_of(c)) for c in runs if c.role == "student"]
    done = [(selection_acc(s), d) for s, d in summaries if s is not None and s.get("status") == "complete"]
    if done:
        best = max(done)[1]
        if not os.path.isfile(os.path.join(best, "evaluation.json")):
            evaluate.evaluate_run(best)


def quantized_table(run_dirs: list) -> str:
    """results.md's table of the quantized students (quant/table.py), "" when the sweep has none."""
    from quant.table import qat_points, qat_table

    items = [(s, d) for d in run_dirs for s in [read_summary(d)] if isinstance(s, dict)]
    points, kd_method = qat_points(items)
    table = qat_table(points, kd_method)
    return "\n" + table if table else ""


def check_writable(base: Config, runs: list) -> None:
    """Before training anything: an out_dir that cannot take files stops the sweep with one line (every
    run would fail the same way). A finished sweep needs no write and reruns even read-only."""
    try:
        os.makedirs(base.out_dir, exist_ok=True)
        if any(not is_complete(run_dir_of(c)) for c in runs):
            tempfile.TemporaryFile(dir=base.out_dir).close()
    except OSError as e:
        raise cannot_write(e, base.out_dir) from None


def size_configs(base: Config) -> list:
    """--sweep_train_samples: one sweep per labeled size, in its own folder (<out_dir>/n<N>, all/ for 0), each
    with its own CE controls, table and plots; its epochs from --sweep_train_epochs; sizes above
    --scale_deep_upto train only the first depth. Every size learns from the same teacher."""
    sizes, epochs = base.sweep_train_samples, base.sweep_train_epochs or (base.epochs,) * len(base.sweep_train_samples)
    deep = lambda n: not base.scale_deep_upto or 0 < n <= base.scale_deep_upto  # noqa: E731
    return [dataclasses.replace(base, sweep_train_samples=(), sweep_train_epochs=(), max_train_samples=n, epochs=e,
                                sweep_blocks=base.sweep_blocks if deep(n) else base.sweep_blocks[:1],
                                out_dir=os.path.join(base.out_dir, size_folder(n))) for n, e in zip(sizes, epochs)]


def scale_main(base: Config) -> int:
    """The data-scaling sweep: the teacher once (unless --teacher_checkpoint names one), then each size's sweep
    (resumable like any sweep), then <out_dir>/scale.md and scale.csv across the sizes."""
    if base.sweep_train_epochs and len(base.sweep_train_epochs) != len(base.sweep_train_samples):
        raise UserError(f"--sweep_train_epochs={list(base.sweep_train_epochs)}: one epoch count per size of "
                        f"--sweep_train_samples={list(base.sweep_train_samples)}, or () for --epochs at every size")
    if len(set(base.sweep_train_samples)) < len(base.sweep_train_samples):
        raise UserError(f"--sweep_train_samples={list(base.sweep_train_samples)}: a size named twice (one folder "
                        f"per size)")
    teacher = base.teacher_checkpoint
    if not teacher:  # on the whole training split unless --teacher_train_samples says otherwise
        cfg = teacher_config(dataclasses.replace(base, max_train_samples=0))
        if not is_complete(run_dir_of(cfg)) and run_one(cfg) != "done":
            raise UserError(f"{run_dir_of(cfg)}: the teacher did not finish; the sizes' sweeps need it")
        teacher = run_dir_of(cfg)
    codes = []
    for cfg in size_configs(base):
        print(f"== {cfg.max_train_samples or 'all'} labeled images, {cfg.epochs} epochs: {cfg.out_dir}")
        codes.append(main(dataclasses.replace(cfg, teacher_checkpoint=teacher)))
    text = write_scale_report(base.out_dir)
    print(text)
    return max(codes)


def main(base: Config) -> int:
    if base.sweep_train_samples:
        return scale_main(base)
    if torchrun.launched_by_torchrun():
        raise UserError("run_experiments.py runs under python, not torchrun: torchrun trains one run "
                        "(train.py); a sweep spreads over GPUs and nodes with --launcher=ray")
    if not base.sweep_blocks and not base.student_arch:  # (a timm student has no depth: it ignores sweep_blocks)
        raise UserError("--sweep_blocks=(): no student depth to sweep; pass one or more, e.g. --sweep_blocks=[4,6]")
    runs = grid(base)
    check_writable(base, runs)
    failed, skipped, unsaved, done = [], [], [], 0
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
        # QAT runs start from finished fp32 students: those train first, then their PTQ contrasts are built
        quantized = [c for c in students if c.qat != "none"]
        for phase in ([c for c in students if c.qat == "none"], quantized):
            if phase is quantized and phase:
                ptq_contrasts(base, phase)
            bar.set_postfix_str("QAT students" if phase is quantized else "students")
            for group, result in run_groups(student_groups(phase)):
                for cfg, st in zip(group, _statuses(group, result)):
                    report(cfg, st)
    bar.close()
    if base.deploy:
        deploy_finished(base, runs)
    try:
        evaluate_best_student(runs)
    except UserError as e:  # e.g. a read-only out_dir: the table still comes, and the exit code says so
        unsaved.append(str(e))
    # every run under out_dir, not only this grid's: a narrower rerun never shrinks the table; under the
    # out_dir's table lock, so a second sweep's table comes after this one's, from every run finished by then
    grid_dirs = [run_dir_of(c) for c in runs]
    with table_lock(base.out_dir):
        others = sorted(os.path.join(base.out_dir, d) for d in os.listdir(base.out_dir)
                        if os.path.join(base.out_dir, d) not in grid_dirs)  # collect_results skips any without a summary
        rows = collect_results(base.out_dir, grid_dirs + others)
        texts = results_text(base.out_dir, rows, base)
        texts = (texts[0], texts[1] + quantized_table(grid_dirs + others))
        if base.tensorboard:
            try:
                write_hparams(base.out_dir, rows)
            except OSError as e:
                unsaved.append(str(cannot_write(e, base.out_dir, "no TensorBoard hparams table")))
        print(texts[1])
        try:
            csv_path, md_path = write_results(base.out_dir, texts)
            print(f"results: {csv_path}, {md_path}")
        except OSError as e:
            unsaved.insert(0, str(cannot_write(e, base.out_dir, "the table above is not saved; pass a writable "
                                                                 "--out_dir to keep it")))
    if skipped:
        print(f"{len(skipped)} run(s) skipped, in use by another process: {', '.join(skipped)}; rerun the sweep "
              f"when they finish to see them in the table", file=sys.stderr)
    if unsaved:
        raise UserError(unsaved[0] + (f" (and {len(unsaved) - 1} more like it)" if len(unsaved) > 1 else ""))
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their summary.json)", file=sys.stderr)
    return 1 if failed or stopped else 0


@cli_entry
def cli(argv=None):
    sys.exit(main(make_config(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    cli()
