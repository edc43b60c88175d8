"""Train ONE model: the teacher (--role=teacher, cross-entropy) or a student (--role=student, --method=...).

    python train.py --role=teacher
    python train.py --blocks=4 --method=kd --precision=bf16
    python train.py --preset=demo --blocks=6 --resume=True

Top to bottom: data -> model -> distiller (distill/) -> engine (distill/engine.py) -> run files.
Writes out_dir/run_name/: model.safetensors, best_model.safetensors, checkpoint.pt, history.json,
config.json, training_summary.txt, summary.json (see README).
"""
import os
import sys

import torch

from config import Config, config_to_dict, default_run_name, make_config
from data.dataset import load_dataset, split_train_val
from data.sampler import BatchSampler
from distill import build_distiller, needs_teacher
from distill.engine import (EarlyStopping, Trainee, build_optimizer, build_scheduler, evaluate_logits, predict,
                            train_epoch)
from distill.runs import check_resumable, is_complete, model_label, read_summary, rng_state, set_rng_state
from models.cnn_model import count_params
from models.teacher_arch import build_model
from utils.atomic import atomic_write_json
from utils.checkpoint import atomic_torch_save, load_checkpoint, save_weights
from utils.device import MIN_STRIDED_1X1_CHANNELS_LAST, channels_last_trainable, hardware_name, resolve_device
from utils.errors import UserError, cli_entry
from utils.precision import setup_precision
from utils.provenance import provenance
from utils.reports import write_training_summary


def main(cfg: Config) -> dict:
    """Train one model as `cfg` says; returns the summary dict (also written to summary.json)."""
    run_name = default_run_name(cfg)
    run_dir = os.path.join(cfg.out_dir, run_name)
    summary_path = os.path.join(run_dir, "summary.json")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if cfg.resume and is_complete(run_dir):
        print(f"{run_name}: already complete, nothing to resume")
        return read_summary(run_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # data order and augmentation

    # data: uint8 tensors on the device, a validation hold-out when asked
    ds = load_dataset(cfg)
    train, val = split_train_val(ds.train, cfg.val_fraction, cfg.seed + 1)
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

        teacher, teacher_info = load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, device)
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

    if not cfg.resume and os.path.isfile(summary_path):
        os.remove(summary_path)  # summary.json marks a complete run: a fresh start is not one yet
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
        "teacher_logits": None, **teacher_info, "provenance": provenance(),
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
