"""Evaluate a run directory: accuracy, calibration (ECE, NLL), per-class precision/recall/F1, confusion matrix;
Intel predictions; a segmentation run's mIoU, per-class IoU and pixel accuracy.

    python evaluate.py --run=checkpoints/demo/fashion-mnist_res4_b128_fp32_kd_s0
    python evaluate.py --run=<intel run> --split=pred            # predictions.csv for seg_pred
    python evaluate.py --run=<run> --deploy=True                 # quantized variants, measured (deploy.json;
                                                                 # a segmentation's: mIoU, pixel accuracy)
    python evaluate.py --run=<byot run> --exit=1                 # one exit of a multi-exit student (exits.json)
    python evaluate.py --run=<byot run> --exit=auto --exit_threshold=0.9   # early exit at a confidence

Everything about the model comes from the run's config.json; data_dir, device and batch sizes may
be overridden on the command line.
"""
import csv
import io
import os
import sys
from contextlib import contextmanager

import torch

from config import make_config, parse_overrides
from data.dataset import Split, load_pred_images, pixel_labels
from report.plots.segmentation import EXAMPLES, plot_segmentation_examples
from report.plots.style import plot_confusion_matrix
from runtime.inference import ECE_BINS, calibration_error, evaluate_logits, label_maps, predict, segment_scores
from runtime.run_dir import load_run
from utils.atomic import atomic_write_bytes, atomic_write_json
from utils.device import resolve_device
from utils.errors import UserError, cannot_write, cli_entry
from utils.names import SEGMENT
from utils.run_files import CONFUSION_MATRIX, EVALUATION, EXITS_JSON, PREDICTIONS, SEGMENTATION_EXAMPLES


@contextmanager
def saving(run_dir: str, what: str):
    """A run folder that cannot take the file: one line saying the results shown were not saved."""
    try:
        yield
    except OSError as e:
        raise cannot_write(e, run_dir, f"{what} is not saved (the results above are shown only); copy the "
                                       f"run to a writable folder to keep it") from None


def classification_report(cm: torch.Tensor, classes) -> list:
    rows = []
    for i, name in enumerate(classes):
        tp = cm[i, i].item()
        pred, true = cm[:, i].sum().item(), cm[i, :].sum().item()
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        rows.append({"class": name, "precision": 100 * p, "recall": 100 * r,
                     "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0), "support": true})
    return rows


def evaluate_test(cfg, model, ds, weights, run_dir, device) -> dict:
    test = ds.test.to(device)
    logits = predict(model.to(device), test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last)
    loss, acc = evaluate_logits(logits, test.labels)
    ece = calibration_error(logits, test.labels)
    k = ds.num_classes
    cm = torch.bincount(test.labels.cpu() * k + logits.argmax(1).cpu(), minlength=k * k).reshape(k, k)
    report = classification_report(cm, ds.classes)
    result = {"run": run_dir, "weights": os.path.basename(weights), "split": "test", "images": len(test),
              "accuracy": acc, "loss": loss, "nll": loss, "ece": ece, "ece_bins": ECE_BINS, "per_class": report, "classes": list(ds.classes),
              "confusion_matrix": cm.tolist()}
    print(f"test accuracy {acc:.2f}% on {len(test)} images ({os.path.basename(weights)}); calibration: ECE {ece:.2f}% "
          f"({ECE_BINS} bins), NLL {loss:.4f}")
    print(f"{'class':>16} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>7}")
    for r in report:
        print(f"{r['class']:>16} {r['precision']:9.2f} {r['recall']:7.2f} {r['f1']:6.2f} {r['support']:7d}")
    with saving(run_dir, EVALUATION):
        atomic_write_json(os.path.join(run_dir, EVALUATION), result)
        plot_confusion_matrix(cm.numpy(), ds.classes, os.path.join(run_dir, CONFUSION_MATRIX),
                              f"{os.path.basename(os.path.normpath(run_dir))}: test accuracy {acc:.2f}%")
    return result


def evaluate_segmentation(cfg, model, ds, weights, run_dir, device) -> dict:
    """A segmentation run's test scores (runtime/inference.segment_scores): mIoU (every class, background
    included), per-class IoU, pixel accuracy and the NLL per labeled pixel, into evaluation.json; its first
    EXAMPLES test scenes with their truth and its labels into segmentation_examples.png."""
    test = ds.test.to(device)
    s = segment_scores(model.to(device), test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last,
                       ds.num_classes)
    result = {"run": run_dir, "weights": os.path.basename(weights), "split": "test", "task": cfg.task,
              "images": len(test), "miou": s["miou"], "pixel_accuracy": s["acc"], "accuracy": s["acc"],
              "loss": s["loss"], "nll": s["loss"], "classes": list(ds.classes),
              "per_class": [{"class": c, "iou": v} for c, v in zip(ds.classes, s["iou"])]}
    print(f"test mIoU {s['miou']:.2f}% (every class, background included), pixel accuracy {s['acc']:.2f}% on "
          f"{len(test)} images ({os.path.basename(weights)}); NLL {s['loss']:.4f} a pixel")
    print(f"{'class':>16} {'IoU':>7}")
    for c, v in zip(ds.classes, s["iou"]):
        print(f"{c:>16} {'-' if v is None else f'{v:.2f}':>7}")
    shown = Split(test.images[:EXAMPLES].cpu(), test.labels[:EXAMPLES].cpu())
    pred = label_maps(model, shown.images, ds.mean, ds.std)
    with saving(run_dir, EVALUATION):
        atomic_write_json(os.path.join(run_dir, EVALUATION), result)
        plot_segmentation_examples(shown.images.numpy(), {"truth": pixel_labels(shown.labels).numpy(),
                                                          cfg.method: pred.numpy()}, ds.classes,
                                   os.path.join(run_dir, SEGMENTATION_EXAMPLES),
                                   f"{os.path.basename(os.path.normpath(run_dir))}: test mIoU {s['miou']:.2f}%",
                                   f"the first {len(shown)} test scenes; {os.path.basename(weights)}")
    return result


def predict_unlabelled(cfg, model, ds, run_dir, device) -> str:
    images, paths = load_pred_images(cfg)
    logits = predict(model.to(device), Split(images, torch.zeros(len(paths), dtype=torch.long)).to(device),
                     ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last)
    prob = logits.softmax(1).cpu()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "predicted_class", "confidence"])
    for p, conf, c in zip(paths, *prob.max(1)):
        w.writerow([p, ds.classes[c], f"{conf.item():.4f}"])
    out = os.path.join(run_dir, PREDICTIONS)
    with saving(run_dir, PREDICTIONS):
        atomic_write_bytes(out, buf.getvalue().encode())
    print(f"{len(paths)} predictions -> {out}")
    return out


def evaluate_run(run_dir: str, overrides: dict = None) -> None:
    """Evaluate (or, with split=pred, predict) a finished run, then deploy it when overrides ask;
    `overrides` may change only fields of scope run, eval and deploy (runtime.run_dir.load_run)."""
    cfg, model, ds, weights = load_run(run_dir, overrides)
    device = resolve_device(cfg.device)
    if cfg.task == SEGMENT:
        if cfg.exit or cfg.split == "pred":
            raise UserError(f"{run_dir}: a segmentation run is evaluated on its test scenes only; --exit and "
                            f"--split=pred serve classifiers")
        evaluate_segmentation(cfg, model, ds, weights, run_dir, device)  # then its deploy variants, as a classifier's
    elif cfg.split == "pred":
        predict_unlabelled(cfg, model, ds, run_dir, device)
    elif cfg.exit:  # a byot run's exit K, or early exit at a confidence
        from deploy.exits import evaluate_exits
        with saving(run_dir, EXITS_JSON):
            evaluate_exits(cfg, model, ds, run_dir, device)
    else:
        evaluate_test(cfg, model, ds, weights, run_dir, device)
    if cfg.qat != "none":
        from quant.students import deploy_how
        print(f"{os.path.basename(weights)}: {deploy_how(cfg.qat)}")
    if cfg.deploy and cfg.qat != "none":  # a quantized student ships its own file: time that, nothing else
        from deploy.qat import time_quantized_run
        time_quantized_run(run_dir, cfg, model, ds, weights, repeats=cfg.deploy_repeats)
    elif cfg.deploy:
        from deploy.variants import deploy_run
        deploy_run(run_dir, cfg, model, ds, repeats=cfg.deploy_repeats, threads=cfg.deploy_threads)


def main(argv) -> None:
    make_config(argv)  # validates every value: a bad one exits 2 naming the field
    overrides = parse_overrides(argv)
    run_dir = overrides.pop("run", "")
    if not run_dir:
        raise UserError("--run=<run directory> is required (e.g. --run=checkpoints/demo/<run_name>)")
    evaluate_run(run_dir, overrides)


@cli_entry
def cli(argv=None):
    main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    cli()
