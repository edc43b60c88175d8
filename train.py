"""Train ONE model: the teacher (--role=teacher, cross-entropy) or a student (--role=student, --method=...).

    python train.py --role=teacher
    python train.py --blocks=4 --method=kd --precision=bf16
    python train.py --preset=demo --blocks=6 --resume=True

Top to bottom: data -> teacher -> each run, one object (runtime/training_run.py) -> engine
(runtime/epochs.py) -> run files.
Writes out_dir/run_name/: model.safetensors, best_model.safetensors, checkpoint.pt, history.json,
config.json, training_summary.txt, summary.json (see docs/runs.md). One process at a time per run
directory (run_dir/.lock); a finished run is replaced only with --overwrite=True.

`train_runs(cfgs)` is the same program for several students that share a seed and their batches (the
sweep's groups): each batch is sliced and augmented once, the teacher's outputs for it are computed
once, and every student steps on it with its own optimizer, schedule, precision, early stopping and
run directory. Each student draws dropout from its own random stream, saved and restored around its
step, so a grouped run's files are exactly what it writes alone.

    torchrun --nproc-per-node=2 train.py --blocks=4 --sync_bn=True

is the same program data-parallel (runtime/torchrun.py): each process trains on its share of every
batch, DistributedDataParallel averages the gradients, rank 0 writes the run files. Without torchrun
nothing changes.
"""
import sys
from contextlib import ExitStack

import torch

from cli import group_key
from config import Config, default_run_name, make_config
from data.dataset import NATIVE_SIZE, SCENES, load_dataset
from data.sampler import BatchSampler
from distill import needs_teacher
from runtime import torchrun
from runtime.epochs import train_epochs_together
from runtime.inference import evaluate_logits, predict, segment_scores
from runtime.run_dir import check_init_from, is_complete, remove_if_bare, restore_history, run_dir_of
from runtime.training_run import TrainingRun
from models.cnn_model import MIN_IMAGE_SIZE, min_image_size
from quant.students import resolve_qat_schedule
from runtime.auto_precision import resolve_auto
from utils.errors import UserError, cli_entry
from utils.lock import run_lock
from utils.run_files import read_summary

def refuse_finished(cfg: Config, run_dir: str) -> None:
    """A finished run is never replaced by accident: a fresh start on one needs --overwrite=True."""
    if not cfg.resume and not cfg.overwrite and is_complete(run_dir):
        raise UserError(f"{run_dir}: holds a finished run; pass --overwrite=True to replace it, another "
                        f"--run_name to keep both, or --resume=True to keep it as it is")


def check_image_size(cfg: Config) -> None:
    """Before any data loads: a student's stride-2 blocks need a big enough input (models/cnn_model.py)."""
    size = cfg.image_size or (min(cfg.scene_canvas) if cfg.dataset == SCENES else NATIVE_SIZE[cfg.dataset])
    blocks = cfg.blocks if cfg.role == "student" and not cfg.student_arch else 0
    need = min_image_size(blocks)
    if size < need:
        which = f"--image_size={size}" if cfg.image_size else f"{cfg.dataset}'s native {size} px"
        model = f"a res{cfg.blocks} student ({cfg.blocks // 2} stride-2 blocks)" if blocks else "training"
        raise UserError(f"{which}: too small for {model}, which needs at least {need} px; pass "
                        f"--image_size={need} or more" + (" or fewer --blocks" if need > MIN_IMAGE_SIZE else ""))


def train_runs(cfgs: list, on_epoch=None) -> list:
    """Train every config of `cfgs` (which share group_key) together; returns their summaries in order.
    Complete runs with resume=True are returned as they are. In a group of several, a run that cannot
    start (a finished run without --overwrite, a locked run directory, a checkpoint that does not fit)
    or that fails (non-finite loss, an error in its step) is returned as its exception, and the others
    finish; a run trained alone raises. on_epoch(run, history_row) is called after each recorded
    epoch (tune.py reports to its pruner there; an exception it raises ends the run as an error would)."""
    if len({group_key(c) for c in cfgs}) > 1:
        raise ValueError("train_runs: these runs do not share their data, seed and teacher (GROUP_FIELDS)")
    world, device = torchrun.start(cfgs[0].device)  # one process, or this rank of a torchrun job
    cfgs = [resolve_auto(c, device) for c in cfgs]  # --precision=auto: bf16 where measured faster
    cfgs = [resolve_qat_schedule(c) for c in cfgs]  # a QAT run: --qat_epochs at --qat_lr
    if world.size > 1 and len(cfgs) > 1:
        raise UserError("under torchrun train.py trains one run; a sweep's runs go to run_experiments.py "
                        "(--launcher=ray for several GPUs or nodes)")
    with ExitStack() as locks:
        # each run's outcome by index: its summary, or the UserError that ended it (a run alone raises it)
        ended, refused = {}, None
        try:
            if world.main:  # under torchrun rank 0 alone checks and locks; every rank follows its verdict
                ended = _check_and_lock(cfgs, locks)
                _raise_alone(cfgs, ended)
        except UserError as e:
            refused = e
        if world.size > 1:
            verdict = torchrun.gather((str(refused) if refused else None, ended))[0]
            if verdict[0] is not None and refused is None:
                refused = UserError(verdict[0])
            ended = verdict[1]
        if refused is not None:
            raise refused
        todo = [i for i in range(len(cfgs)) if i not in ended]
        try:
            if todo:
                ended.update(_train_locked(cfgs, todo, world, device, on_epoch))
        finally:
            if world.main:  # a run that stopped before writing a file leaves no folder holding only .lock
                for i in todo:
                    remove_if_bare(run_dir_of(cfgs[i]))
    return [ended[i] for i in range(len(cfgs))]


def _raise_alone(cfgs: list, ended: dict) -> None:
    """A run trained alone raises what ended it; in a group it stays that run's outcome."""
    if len(cfgs) == 1 and isinstance(ended.get(0), UserError):
        raise ended[0]


def _check_and_lock(cfgs: list, locks: ExitStack) -> dict:
    """Each run's lock taken (one process per run dir: a second one exits 2) and its start checked.
    Returns {index: outcome} for the runs that end here: a complete run with resume=True (its summary)
    and a run that cannot start (its UserError)."""
    ended = {}
    for i, cfg in enumerate(cfgs):
        run_dir = run_dir_of(cfg)
        if cfg.resume and is_complete(run_dir):
            print(f"{default_run_name(cfg)}: already complete, nothing to resume")
            restore_history(run_dir)
            ended[i] = read_summary(run_dir)
            continue
        try:
            refuse_finished(cfg, run_dir)
            check_image_size(cfg)
            check_init_from(cfg)
            locks.enter_context(run_lock(run_dir))
            if cfg.resume and is_complete(run_dir):  # finished by that other process meanwhile
                ended[i] = read_summary(run_dir)
                continue
            refuse_finished(cfg, run_dir)
        except UserError as e:
            ended[i] = e
    return ended


def _train_locked(cfgs: list, todo: list, world, device, on_epoch=None) -> dict:
    """train_runs for the runs in `todo`, checked and locked: data and teacher once, then every run.
    Returns {index: its summary, or the UserError that ended it}."""
    first = cfgs[todo[0]]
    if first.batch_size % world.size:
        raise UserError(f"--batch_size={first.batch_size}: the global batch is split over {world.size} "
                        f"torchrun processes; pass a multiple of {world.size}")

    # data: uint8 tensors on the device; a validation hold-out (the same for every run) when asked
    with torchrun.main_first():  # rank 0 builds any cache, the others read it
        ds = load_dataset(first)
    if world.size > 1 and min(len(ds.train), first.batch_size) < 2 * world.size:
        raise UserError(f"{min(len(ds.train), first.batch_size)} images a batch over {world.size} torchrun processes: "
                        f"BatchNorm needs at least 2 on each; raise --batch_size (and the training images) to "
                        f"{2 * world.size} or more")
    if len(ds.train) < 2:  # BatchNorm needs two images a batch
        held = f" after --val_fraction={first.val_fraction} holds out {len(ds.val)}" if ds.val is not None else ""
        total = len(ds.train) + (len(ds.val) if ds.val is not None else 0)
        raise UserError(f"{len(ds.train)} of {total} training image(s) left to train on{held}; at least 2 are "
                        f"needed: lower --val_fraction or raise --max_train_samples")
    train, test = ds.train.to(device), ds.test.to(device)
    val = ds.val.to(device) if ds.val is not None else None

    # the frozen teacher, once for every student that learns from it
    teacher, info = None, {}
    if any(needs_teacher(cfgs[i]) for i in todo):
        from runtime.teacher import load_frozen_teacher

        teacher, info = load_frozen_teacher(first, ds.in_channels, ds.num_classes, device, ds.image_size,
                                            data=ds)
        if test.labels.dim() > 1:  # a segmentation's, on the students' test scenes: pixel accuracy and mIoU
            scores = segment_scores(teacher, test, ds.mean, ds.std, first.eval_batch_size, first.channels_last,
                                    ds.num_classes)
            info.update(teacher_acc=scores["acc"], teacher_miou=scores["miou"])
        elif info["teacher_acc"] is None:
            info["teacher_acc"] = evaluate_logits(predict(teacher, test, ds.mean, ds.std, first.eval_batch_size,
                                                          first.channels_last), test.labels)[1]

    # each run (its model, method, optimizer and files: one object), then the engine over every batch
    runs, ended = {}, {}
    for i in todo:
        try:
            runs[i] = TrainingRun(cfgs[i], ds, device, teacher, info, world, on_epoch)
        except UserError as e:  # e.g. a partial run that cannot resume: that run alone, in a group
            ended[i] = e
    _raise_alone(cfgs, ended)
    parts = {}  # students step together only from the same epoch on, in the same memory layout
    for r in runs.values():
        # (feature methods read the teacher online; alone, the others would use cached logits)
        key = (r.start_epoch, r.channels_last, r.distiller.mixup, r.distiller.needs_features)
        parts.setdefault(key, []).append(r)
    for part in parts.values():
        _fit(part, ds, train, val, test, teacher, info, isolate=len(cfgs) > 1)
    n_val = len(val) if val is not None else 0
    ended.update({i: r.failure or r.finish(test, len(train), n_val) for i, r in runs.items()})
    return ended


def _fit(runs: list, ds, train, val, test, teacher, info: dict, isolate: bool) -> None:
    """The epochs of students that share every batch: one sampler, one teacher source, one progress bar.
    isolate: a student's failure ends only its run (else it is raised)."""
    cfg, world = runs[0].cfg, runs[0].world
    generator = torch.Generator().manual_seed(cfg.seed)  # data order and augmentation (the same on every rank)
    if runs[0].generator_state is not None:
        generator.set_state(runs[0].generator_state)
    sampler = BatchSampler(train, cfg.batch_size, cfg.augment, ds.mean, ds.std, runs[0].channels_last,
                           generator, cfg.random_erasing, runs[0].distiller.mixup, ds.num_classes,
                           shard=(world.rank, world.size), pad_ignored=ds.name != SCENES)
    source = None
    if teacher is not None:
        from runtime.teacher import TeacherSource

        layers = sorted({n for r in runs for n in r.distiller.teacher_layers})
        with torchrun.main_first():  # rank 0 computes and caches the teacher's logits, the others read them
            source = TeacherSource(cfg, teacher, info, sampler, layers)
    for r in runs:
        r.begin(source, len(train), len(test))
    for epoch in range(runs[0].start_epoch, max(r.cfg.epochs for r in runs)):
        active = [r for r in runs if r.active(epoch)]
        if not active:
            break
        lrs = [r.lr for r in active]
        label = active[0].name if len(active) == 1 else f"{len(active)} students, seed {cfg.seed}"
        stats = train_epochs_together(active, sampler, source, epoch,
                                      desc=f"{label} epoch {epoch + 1}/{max(r.cfg.epochs for r in active)}")
        for r, st, lr in zip(active, stats, lrs):
            if st.error is not None:
                if not isolate:
                    raise st.error
                r.failure = st.error  # recorded by the caller; the other students go on
                print(f"{r.name}: failed at epoch {epoch + 1}: {str(st.error).splitlines()[0][:200]}")
                continue
            r.end_epoch(epoch, st, lr, sampler.images_per_epoch, val, test, generator)


def main(cfg: Config, on_epoch=None) -> dict:
    """Train one model as `cfg` says; returns the summary dict (also written to summary.json)."""
    return train_runs([cfg], on_epoch)[0]


@cli_entry
def cli(argv=None):
    try:
        main(make_config(sys.argv[1:] if argv is None else argv))
        # under torchrun every rank leaves together: a rank that tore its gloo group down while rank 0 was still
        # testing and writing aborted now and then ("terminate called without an active exception")
        torchrun.barrier()
    finally:
        torchrun.stop()


if __name__ == "__main__":
    cli()
