"""Train ONE model: the teacher (--role=teacher, cross-entropy) or a student (--role=student, --method=ce|kd|dkd).

    python train.py --role=teacher
    python train.py --blocks=4 --method=kd --precision=bf16
    python train.py --preset=demo --blocks=6 --resume=True

Writes out_dir/run_name/: model.safetensors, best_model.safetensors, checkpoint.pt, history.json,
config.json, training_summary.txt, summary.json (see README).
"""
import os
import sys

import torch

from config import Config, config_to_dict, default_run_name, make_config
from data.dataset import Split, load_dataset, stratified_subset
from models.cnn_model import count_params
from models.teacher_arch import build_model
from utils.checkpoint import (atomic_torch_save, atomic_write_json, load_checkpoint, read_json,
                              save_weights)
from utils.errors import UserError, cli_entry
from utils.precision import hardware_name, resolve_device, setup_precision
from utils.reports import write_training_summary
from utils.train_utils import (EarlyStopping, build_optimizer, build_scheduler,
                               evaluate_logits, predict, train_epoch)

RESUME_IGNORES = {"resume", "device", "num_workers", "run", "split", "deploy", "calib_samples",
                  "sweep_blocks", "sweep_precisions", "sweep_methods", "seeds", "eval_batch_size"}


def split_train_val(cfg, train):
    """(train, val or None): a class-stratified, seeded hold-out of val_fraction of train."""
    if cfg.val_fraction <= 0:
        return train, None
    n_val = max(1, int(round(cfg.val_fraction * len(train.labels))))
    val_idx = stratified_subset(train.labels, n_val, cfg.seed + 1)
    keep = torch.ones(len(train.labels), dtype=torch.bool)
    keep[val_idx] = False
    return Split(train.images[keep], train.labels[keep]), Split(train.images[val_idx], train.labels[val_idx])


def model_label(cfg) -> str:
    return f"{cfg.teacher_arch} (teacher)" if cfg.role == "teacher" else f"ResidualCNN res{cfg.blocks} (student)"


def _rng_state(generator) -> dict:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(cfg, run_dir) -> None:
    saved = read_json(os.path.join(run_dir, "config.json"))
    now = config_to_dict(cfg)
    diff = [k for k in now if k not in RESUME_IGNORES and k in saved and saved[k] != now[k]]
    if diff:
        raise UserError(f"{run_dir}: cannot resume, the config differs from the interrupted run's in "
                        f"{', '.join(diff[:5])}; pass the same values or a new --run_name")


def main(cfg: Config) -> dict:
    """Train one model as `cfg` says; returns the summary dict (also written to summary.json)."""
    run_name = default_run_name(cfg)
    run_dir = os.path.join(cfg.out_dir, run_name)
    summary_path = os.path.join(run_dir, "summary.json")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if cfg.resume and os.path.isfile(summary_path) and read_json(summary_path).get("status") == "complete":
        print(f"{run_name}: already complete, nothing to resume")
        return read_json(summary_path)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    ds = load_dataset(cfg)
    train, val = split_train_val(cfg, ds.train)
    train, val, test = train.to(device), (val.to(device) if val is not None else None), ds.test.to(device)

    model = build_model(cfg, ds.in_channels, ds.num_classes)
    params = count_params(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    prec = setup_precision(cfg.precision, model, device)
    if cfg.precision_note:
        prec.description += f" ({cfg.precision_note})"

    teacher_fn, teacher_info, logits_how = None, {}, None
    if cfg.role == "student" and cfg.method != "ce":
        from utils.teacher import load_frozen_teacher, make_teacher_fn
        teacher, teacher_info = load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, device)
        if teacher_info["teacher_acc"] is None:
            teacher_info["teacher_acc"] = evaluate_logits(
                predict(teacher, test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last), test.labels)[1]
        teacher_fn, logits_how = make_teacher_fn(cfg, teacher, teacher_info, train, ds.mean, ds.std)

    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    train_model = torch.compile(model) if cfg.compile else model
    stopper, history, start_epoch, elapsed = EarlyStopping(cfg.patience), [], 0, 0.0

    if cfg.resume and os.path.isfile(ckpt_path):
        _check_resumable(cfg, run_dir)
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if prec.scaler is not None and ck.get("scaler"):
            prec.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"], generator)
        stopper = EarlyStopping(cfg.patience, **ck["early_stopping"])
        history, start_epoch, elapsed = ck["history"], ck["epoch"] + 1, ck["elapsed_seconds"]
        print(f"{run_name}: resuming after epoch {start_epoch} of {cfg.epochs}")
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, "config.json"), config_to_dict(cfg))
    print(f"{run_name}: {model_label(cfg)}, {params:,} params, {prec.description}, "
          f"{len(train)} train / {len(test)} test images from {ds.source}"
          + (f", teacher {teacher_info['teacher_arch']} at {teacher_info['teacher_acc']:.2f}%, logits {logits_how}"
             if teacher_fn else ""))

    if not cfg.resume and os.path.isfile(summary_path):
        os.remove(summary_path)  # summary.json marks a complete run: a fresh start is not one yet
    for epoch in range(start_epoch, cfg.epochs):
        if stopper.should_stop:
            break
        lr = optimizer.param_groups[0]["lr"]
        stats = train_epoch(cfg, train_model, train, ds.mean, ds.std, prec, optimizer, scheduler, generator,
                            epoch, teacher_fn, desc=f"{run_name} epoch {epoch + 1}/{cfg.epochs}")
        test_loss, test_acc = evaluate_logits(
            predict(model, test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last, prec.autocast), test.labels)
        row = {"epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, "test_loss": test_loss,
               "test_acc": test_acc, "lr": lr, "epoch_seconds": stats.seconds,
               "images_per_second": len(train) // cfg.batch_size * cfg.batch_size / stats.seconds}
        row.update({f"train_{k}": v for k, v in stats.terms.items() if len(stats.terms) > 1})
        if val is not None:
            row["val_loss"], row["val_acc"] = evaluate_logits(
                predict(model, val, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last, prec.autocast), val.labels)
        history.append(row)
        elapsed += stats.seconds
        if stopper.update(row["val_acc"] if val is not None else test_acc, epoch):
            save_weights(model, os.path.join(run_dir, "best_model.safetensors"), {"epoch": epoch + 1})
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {stats.loss:.4f}  train {stats.acc:.2f}%  "
              f"test {test_acc:.2f}%" + (f"  val {row['val_acc']:.2f}%" if val is not None else "")
              + f"  lr {lr:.2e}  {stats.seconds:.1f}s  ({row['images_per_second']:.0f} img/s)", flush=True)
        atomic_write_json(os.path.join(run_dir, "history.json"), history)
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(),
                           "scaler": prec.scaler.state_dict() if prec.scaler is not None else {},
                           "epoch": epoch, "early_stopping": stopper.state(), "history": history,
                           "rng": _rng_state(generator), "elapsed_seconds": elapsed}, ckpt_path)
        if stopper.should_stop and epoch + 1 < cfg.epochs:
            print(f"early stopping: no better {'val' if val is not None else 'test'} accuracy "
                  f"for {cfg.patience} epochs")
    if not history:
        raise UserError(f"{run_dir}: nothing to train (epochs={cfg.epochs} already done)")

    model_bytes = save_weights(model, os.path.join(run_dir, "model.safetensors"), {"epoch": history[-1]["epoch"]})
    stopped_early = history[-1]["epoch"] < cfg.epochs
    best = history[stopper.best_epoch]
    secs = sorted(r["epoch_seconds"] for r in history)
    summary = {
        "status": "complete", "run_name": run_name, "role": cfg.role, "dataset": cfg.dataset,
        "model": model_label(cfg), "arch": cfg.teacher_arch if cfg.role == "teacher" else f"res{cfg.blocks}",
        "blocks": cfg.blocks if cfg.role == "student" else None,
        "fc_layers": list(getattr(model, "fc_layers", ()) or []), "params": params, "model_bytes": model_bytes,
        "image_size": ds.image_size, "in_channels": ds.in_channels, "num_classes": ds.num_classes,
        "classes": list(ds.classes), "train_images": len(train), "test_images": len(test),
        "data_source": ds.source, "precision": cfg.precision, "precision_description": prec.description,
        "device": str(device), "hardware": hardware_name(device), "method": cfg.method if cfg.role == "student" else "ce",
        "temperature": cfg.temperature, "alpha": cfg.alpha, "seed": cfg.seed, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "optimizer": cfg.optimizer, "schedule": cfg.schedule, "epochs": cfg.epochs,
        "epochs_run": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
        "best_val_acc": best.get("val_acc"), "selected_on": "val" if val is not None else "test",
        "final_test_acc": history[-1]["test_acc"], "early_stopped": stopped_early,
        "stopped_at_epoch": history[-1]["epoch"], "train_seconds": elapsed,
        "seconds_per_epoch": secs[len(secs) // 2],
        "images_per_second": len(train) * len(history) / elapsed if elapsed > 0 else None,
        "teacher_logits": logits_how, **teacher_info,
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
