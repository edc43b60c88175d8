"""Train ONE model: the teacher (--role=teacher, cross-entropy) or a student (--role=student, --method=...).

    python train.py --role=teacher
    python train.py --blocks=4 --method=kd --precision=bf16
    python train.py --preset=demo --blocks=6 --resume=True

Top to bottom: data -> model -> distiller (distill/) -> engine (distill/engine.py) -> run files.
Writes out_dir/run_name/: model.safetensors, best_model.safetensors, checkpoint.pt, history.json,
config.json, training_summary.txt, summary.json (see README). One process at a time per run
directory (run_dir/.lock); a finished run is replaced only with --overwrite=True.
"""
import os
import sys

import torch

from config import Config, config_to_dict, default_run_name, make_config
from data.dataset import NATIVE_SIZE, load_dataset, split_train_val
from data.sampler import BatchSampler
from distill import build_distiller, needs_teacher
from distill.engine import (EarlyStopping, Trainee, build_optimizer, build_scheduler, evaluate_logits, predict,
                            train_epoch)
from distill.runs import (check_resumable, is_complete, model_label, read_summary, remove_derived, rng_state,
                         run_dir_of, set_rng_state)
from models.cnn_model import MIN_IMAGE_SIZE, count_params, min_image_size
from models.teacher_arch import build_model
from utils.atomic import atomic_write_json
from utils.checkpoint import atomic_torch_save, load_checkpoint, save_weights
from utils.device import MIN_STRIDED_1X1_CHANNELS_LAST, channels_last_trainable, hardware_name, resolve_device
from utils.errors import UserError, cli_entry
from utils.lock import run_lock
from utils.precision import setup_precision
from utils.provenance import provenance
from utils.reports import write_training_summary


LOSS_BLOWUP = 100.0  # a training loss this many times its first batch's: warn that the lr is too high


def refuse_finished(cfg: Config, run_dir: str) -> None:
    """A finished run is never replaced by accident: a fresh start on one needs --overwrite=True."""
    if not cfg.resume and not cfg.overwrite and is_complete(run_dir):
        raise UserError(f"{run_dir}: holds a finished run; pass --overwrite=True to replace it, another "
                        f"--run_name to keep both, or --resume=True to keep it as it is")


def check_image_size(cfg: Config) -> None:
    """Before any data loads: a student's stride-2 blocks need a big enough input (models/cnn_model.py)."""
    size = cfg.image_size or NATIVE_SIZE[cfg.dataset]
    blocks = cfg.blocks if cfg.role == "student" else 0
    need = min_image_size(blocks)
    if size < need:
        which = f"--image_size={size}" if cfg.image_size else f"{cfg.dataset}'s native {size} px"
        model = f"a res{cfg.blocks} student ({cfg.blocks // 2} stride-2 blocks)" if blocks else "training"
        raise UserError(f"{which}: too small for {model}, which needs at least {need} px; pass "
                        f"--image_size={need} or more" + (" or fewer --blocks" if need > MIN_IMAGE_SIZE else ""))


def main(cfg: Config) -> dict:
    """Train one model as `cfg` says; returns the summary dict (also written to summary.json)."""
    run_dir = run_dir_of(cfg)
    if cfg.resume and is_complete(run_dir):
        print(f"{default_run_name(cfg)}: already complete, nothing to resume")
        return read_summary(run_dir)
    refuse_finished(cfg, run_dir)
    check_image_size(cfg)
    with run_lock(run_dir):  # exits 2 naming the holder when another process trains this run
        if cfg.resume and is_complete(run_dir):  # finished by that other process meanwhile
            return read_summary(run_dir)
        refuse_finished(cfg, run_dir)
        return _train(cfg, run_dir)


def _train(cfg: Config, run_dir: str) -> dict:
    run_name = default_run_name(cfg)
    summary_path = os.path.join(run_dir, "summary.json")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # data order and augmentation

    # data: uint8 tensors on the device, a validation hold-out when asked
    ds = load_dataset(cfg)
    train, val = split_train_val(ds.train, cfg.val_fraction, cfg.seed + 1)
    if len(train) < 2:  # BatchNorm needs two images a batch
        held = f" after --val_fraction={cfg.val_fraction} holds out {len(val)}" if val is not None else ""
        raise UserError(f"{len(train)} of {len(ds.train)} training image(s) left to train on{held}; at least 2 "
                        f"are needed: lower --val_fraction or raise --max_train_samples")
    train, val, test = train.to(device), (val.to(device) if val is not None else None), ds.test.to(device)

    # model, in its precision
    model = build_model(cfg, ds.in_channels, ds.num_classes)
    params = count_params(model)
    model.to(device)
    channels_last = cfg.channels_last and (device.type != "cpu" or channels_last_trainable(model))
    if channels_last != cfg.channels_last:
        print(f"{run_name}: training in NCHW, not channels_last: a strided 1x1 convolution with fewer than "
              f"{MIN_STRIDED_1X1_CHANNELS_LAST} input channels crashes oneDNN's channels_last backward on CPUs")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prec = setup_precision(cfg.precision, model, device)
    if cfg.precision_note:
        prec.description += f" ({cfg.precision_note})"

    # the method: a distiller around the model, and the frozen teacher's outputs when it uses one
    teacher = source = None
    teacher_info = {}
    if needs_teacher(cfg):
        from distill.teacher import TeacherSource, load_frozen_teacher

        teacher, teacher_info = load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, device, ds.image_size)
        if teacher_info["teacher_acc"] is None:
            teacher_info["teacher_acc"] = evaluate_logits(
                predict(teacher, test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last), test.labels)[1]
    distiller = build_distiller(cfg, model, teacher)
    if teacher is not None:
        source = TeacherSource(cfg, teacher, teacher_info, train, ds.mean, ds.std, cfg.channels_last,
                               distiller.teacher_layers)
        teacher_info["teacher_logits"] = source.how

    # the engine's pieces
    optimizer = build_optimizer(cfg, distiller.learnable_parameters())
    sampler = BatchSampler(train, cfg.batch_size, cfg.augment, ds.mean, ds.std, channels_last, generator)
    scheduler = build_scheduler(cfg, optimizer, sampler.steps)
    if cfg.compile:
        model.compile()
    trainee = Trainee(distiller, optimizer, scheduler, prec)
    stopper, history, start_epoch, elapsed = EarlyStopping(cfg.patience), [], 0, 0.0

    if cfg.resume and os.path.isfile(ckpt_path):
        check_resumable(cfg, run_dir)
        ck = load_checkpoint(ckpt_path)
        distiller.load_trainable_state(ck.get("trainable") or {"student": ck["model"]})  # older checkpoints
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if prec.scaler is not None and ck.get("scaler"):
            prec.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"], generator)
        stopper = EarlyStopping(cfg.patience, **ck["early_stopping"])
        history, start_epoch, elapsed = ck["history"], ck["epoch"] + 1, ck["elapsed_seconds"]
        print(f"{run_name}: resuming after epoch {start_epoch} of {cfg.epochs}")
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, "config.json"), config_to_dict(cfg))
    print(f"{run_name}: {model_label(cfg)}, {params:,} params, {prec.description}, "
          f"{len(train)} train / {len(test)} test images from {ds.source}"
          + (f", teacher {teacher_info['teacher_arch']} at {teacher_info['teacher_acc']:.2f}%, "
             f"logits {source.how}" if source else ""))

    if not cfg.resume:
        if is_complete(run_dir):
            print(f"{run_name}: replacing the finished run (--overwrite=True)")
        elif os.path.isfile(ckpt_path):
            print(f"{run_name}: starting over; the interrupted run's checkpoint.pt is replaced "
                  f"(--resume=True would continue it)")
        # summary.json marks a complete run: a fresh start is not one yet; reports of the old weights go too
        remove_derived(run_dir)
    run_warnings = []
    evaluate = lambda split: evaluate_logits(predict(model, split, ds.mean, ds.std, cfg.eval_batch_size,
                                                     channels_last, prec.autocast), split.labels)
    for epoch in range(start_epoch, cfg.epochs):
        if stopper.should_stop:
            break
        lr = optimizer.param_groups[0]["lr"]
        stats = train_epoch(trainee, sampler, source, epoch, desc=f"{run_name} epoch {epoch + 1}/{cfg.epochs}")
        test_loss, test_acc = evaluate(test)
        row = {"epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, "test_loss": test_loss,
               "test_acc": test_acc, "lr": lr, "epoch_seconds": stats.seconds,
               "images_per_second": sampler.images_per_epoch / stats.seconds}
        row.update({f"train_{k}": v for k, v in stats.terms.items() if len(stats.terms) > 1})
        if val is not None:
            row["val_loss"], row["val_acc"] = evaluate(val)
        reference = min([stats.first_loss] + [h["train_loss"] for h in history])
        if not run_warnings and stats.loss > LOSS_BLOWUP * reference > 0:
            run_warnings.append(f"the training loss grew from {reference:.3g} to {stats.loss:.3g} by epoch "
                                f"{epoch + 1} (x{stats.loss / reference:.0e}); --lr={cfg.lr:g} is probably too high")
            print(f"warning: {run_name}: {run_warnings[-1]}", file=sys.stderr, flush=True)
        history.append(row)
        elapsed += stats.seconds
        if stopper.update(row["val_acc"] if val is not None else test_acc, epoch):
            save_weights(model, os.path.join(run_dir, "best_model.safetensors"), {"epoch": epoch + 1})
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {stats.loss:.4f}  train {stats.acc:.2f}%  "
              f"test {test_acc:.2f}%" + (f"  val {row['val_acc']:.2f}%" if val is not None else "")
              + f"  lr {lr:.2e}  {stats.seconds:.1f}s  ({row['images_per_second']:.0f} img/s)", flush=True)
        atomic_write_json(os.path.join(run_dir, "history.json"), history)
        atomic_torch_save({"model": model.state_dict(), "trainable": distiller.trainable_state(),
                           "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "scaler": prec.scaler.state_dict() if prec.scaler is not None else {},
                           "epoch": epoch, "early_stopping": stopper.state(), "history": history,
                           "rng": rng_state(generator), "elapsed_seconds": elapsed}, ckpt_path)
        if stopper.should_stop and epoch + 1 < cfg.epochs:
            print(f"early stopping: no better {'val' if val is not None else 'test'} accuracy "
                  f"for {cfg.patience} epochs")
    if not history:
        raise UserError(f"{run_dir}: nothing to train (epochs={cfg.epochs} already done)")

    model_bytes = save_weights(model, os.path.join(run_dir, "model.safetensors"), {"epoch": history[-1]["epoch"]})
    best = history[stopper.best_epoch]
    secs = sorted(r["epoch_seconds"] for r in history)
    summary = {
        "status": "complete", "run_name": run_name, "role": cfg.role, "dataset": cfg.dataset,
        "model": model_label(cfg), "arch": cfg.teacher_arch if cfg.role == "teacher" else f"res{cfg.blocks}",
        "blocks": cfg.blocks if cfg.role == "student" else None,
        "fc_layers": list(getattr(model, "fc_layers", ()) or []), "params": params, "model_bytes": model_bytes,
        "image_size": ds.image_size, "in_channels": ds.in_channels, "num_classes": ds.num_classes,
        "classes": list(ds.classes), "train_images": len(train), "test_images": len(test),
        "val_images": len(val) if val is not None else 0,
        "data_source": ds.source, "precision": cfg.precision, "precision_description": prec.description,
        "device": str(device), "hardware": hardware_name(device), "method": distiller.name,
        "hparams": distiller.hparams(), "seed": cfg.seed, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "optimizer": cfg.optimizer, "schedule": cfg.schedule, "epochs": cfg.epochs,
        "epochs_run": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
        "best_val_acc": best.get("val_acc"), "selected_on": "val" if val is not None else "test",
        "final_test_acc": history[-1]["test_acc"], "early_stopped": history[-1]["epoch"] < cfg.epochs,
        "stopped_at_epoch": history[-1]["epoch"], "train_seconds": elapsed,
        "seconds_per_epoch": secs[len(secs) // 2],
        "images_per_second": len(train) * len(history) / elapsed if elapsed > 0 else None,
        "teacher_logits": None, **teacher_info, "warnings": run_warnings, "provenance": provenance(),
    }
    write_training_summary(os.path.join(run_dir, "training_summary.txt"), summary)
    atomic_write_json(summary_path, summary)
    print(f"{run_name}: best test accuracy {best['test_acc']:.2f}% at epoch {best['epoch']}, "
          f"{elapsed:.1f}s training -> {run_dir}")
    return summary


@cli_entry
def cli(argv=None):
    main(make_config(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    cli()
