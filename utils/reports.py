"""Human-readable run reports (training_summary.txt with the original repo's line labels)."""
from utils.atomic import atomic_write_text
from utils.run_files import FINAL_WEIGHTS


def hparams_text(hparams) -> str:
    """{'temperature': 4.0, 'alpha': 0.1} -> 'temperature=4.0, alpha=0.1' (training_summary.txt, results.md)."""
    return ", ".join(f"{k}={v}" for k, v in (hparams or {}).items())


def _acc(v) -> str:
    return "n/a" if v is None else f"{v:.2f}%"


def write_training_summary(path, s: dict) -> None:
    fc = ", ".join(str(v) for v in s["fc_layers"]) if s["fc_layers"] else "n/a"
    lines = [
        f"Model Architecture: {s['model']}",
        f"Residual Blocks: {s['blocks'] if s['blocks'] is not None else 'n/a'}",
        f"Fully Connected Layers: [{fc}]",
        f"Trainable Parameters: {s['params']:,}",
        f"Model Size: {s['model_bytes']:,} bytes ({FINAL_WEIGHTS})",
        f"Training Time: {s['train_seconds']:.1f} seconds ({s['train_seconds'] / 60:.2f} minutes)",
        f"Hardware Used: {s['hardware']}",
        f"Precision: {s['precision_description']}",
        f"Dataset: {s['dataset']} ({s['train_images']:,} train" + (f" + {s['unlabeled_images']:,} unlabeled (labels "
                                                                    f"never seen: the teacher's outputs only)"
                                                                    if s.get("unlabeled_images") else "")
        + f" / {s['test_images']:,} test images, "
        f"{s['image_size']}x{s['image_size']} px)",
        f"Method: {s['method']}" + (f" ({hparams_text(s.get('hparams'))})" if s.get("hparams") else ""),
        f"Teacher: {s.get('teacher_run') or 'none'}" + (f" ({_acc(s.get('teacher_acc'))}"
                                                        + (f" pixel accuracy, {_acc(s['teacher_miou'])} mIoU"
                                                           if s.get("teacher_miou") is not None else "") + ")"
                                                        if s.get("teacher_run") else ""),
        f"Batch Size: {s['batch_size']}" + (f" (global: {s['world_size']} processes x {s['batch_per_rank']}, "
                                            f"{s['data_parallel']})" if s.get("world_size", 1) > 1 else ""),
        f"Learning Rate: {s['lr']} ({s['optimizer']}, {s['schedule']} schedule)",
        f"Epochs: {s['epochs_run']} of {s['epochs']}",
        f"Best Test Accuracy: {_acc(s['best_test_acc'])} (epoch {s['best_epoch']}, selected on {s['selected_on']}"
        + (f" from epoch {s['selected_from_epoch']})" if s.get("selected_from_epoch", 1) > 1 else ")"),
        f"Final Test Accuracy: {_acc(s['final_test_acc'])}",
        *([f"Test mIoU: {_acc(s['test_miou'])} at the selected epoch ({_acc(s.get('best_val_miou'))} on "
           f"{s['selected_on']}), {_acc(s.get('final_test_miou'))} at the last (every class, background included; "
           f"the accuracies above are pixel accuracy)"] if s.get("test_miou") is not None else []),
        f"Early Stopping: {'Yes' if s['early_stopped'] else 'No'}",
        f"Stopped at epoch: {s['stopped_at_epoch']}",
        f"Seed: {s['seed']}",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
