"""Evaluate a run directory: accuracy, per-class precision/recall/F1, confusion matrix; Intel predictions.

    python evaluate.py --run=checkpoints/demo/fashion-mnist_res4_b128_fp32_kd_s0
    python evaluate.py --run=<intel run> --split=pred            # predictions.csv for seg_pred
    python evaluate.py --run=<run> --deploy=True                 # quantized variants, measured (deploy.json)

Everything about the model comes from the run's config.json; data_dir, device and batch sizes may
be overridden on the command line.
"""
import csv
import dataclasses
import io
import os
import sys

import torch

from config import config_from_dict, make_config, parse_overrides
from data.dataset import Split, load_dataset, load_pred_images
from models.teacher_arch import build_model
from utils.checkpoint import atomic_write_bytes, atomic_write_json, load_weights_into, read_json, run_weights_file
from utils.errors import UserError, cli_entry
from utils.precision import resolve_device
from utils.train_utils import evaluate_logits, predict
from utils.visualization import plot_confusion_matrix

DEPLOY_FIELDS = ("data_dir", "device", "calib_samples", "deploy_variants", "deploy_repeats", "deploy_threads")
RUN_OVERRIDABLE = set(DEPLOY_FIELDS) | {"eval_batch_size", "split", "deploy", "max_test_samples", "num_workers"}


def load_run(run_dir: str, overrides: dict = None):
    """(config, model in eval mode on CPU, dataset) of a finished run directory."""
    if not os.path.isdir(run_dir):
        raise UserError(f"--run={run_dir}: no such run directory")
    cfg = config_from_dict(read_json(os.path.join(run_dir, "config.json")))
    bad = set(overrides or {}) - RUN_OVERRIDABLE
    if bad:
        raise UserError(f"--{sorted(bad)[0]}: fixed by the run's config.json; evaluate.py takes only "
                        f"--run and {', '.join('--' + k for k in sorted(RUN_OVERRIDABLE))}")
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    path = run_weights_file(run_dir)
    if path is None:
        raise UserError(f"{run_dir}: no best_model.safetensors or model.safetensors; is the run finished?")
    ds = load_dataset(cfg)
    model = build_model(dataclasses.replace(cfg, teacher_pretrained=False), ds.in_channels, ds.num_classes)
    load_weights_into(model, path)
    return cfg, model.eval(), ds, path


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
    k = ds.num_classes
    cm = torch.bincount(test.labels.cpu() * k + logits.argmax(1).cpu(), minlength=k * k).reshape(k, k)
    report = classification_report(cm, ds.classes)
    result = {"run": run_dir, "weights": os.path.basename(weights), "split": "test", "images": len(test),
              "accuracy": acc, "loss": loss, "per_class": report, "classes": list(ds.classes),
              "confusion_matrix": cm.tolist()}
    atomic_write_json(os.path.join(run_dir, "evaluation.json"), result)
    plot_confusion_matrix(cm.numpy(), ds.classes, os.path.join(run_dir, "confusion_matrix.png"),
                          f"{os.path.basename(os.path.normpath(run_dir))}: test accuracy {acc:.2f}%")
    print(f"test accuracy {acc:.2f}% on {len(test)} images ({os.path.basename(weights)})")
    print(f"{'class':>16} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>7}")
    for r in report:
        print(f"{r['class']:>16} {r['precision']:9.2f} {r['recall']:7.2f} {r['f1']:6.2f} {r['support']:7d}")
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
    out = os.path.join(run_dir, "predictions.csv")
    atomic_write_bytes(out, buf.getvalue().encode())
    print(f"{len(paths)} predictions -> {out}")
    return out


def main(argv) -> None:
    make_config(argv)  # validates every value: a bad one exits 2 naming the field
    overrides = parse_overrides(argv)
    run_dir = overrides.pop("run", "")
    if not run_dir:
        raise UserError("--run=<run directory> is required (e.g. --run=checkpoints/demo/<run_name>)")
    cfg, model, ds, weights = load_run(run_dir, overrides)
    device = resolve_device(cfg.device)
    if cfg.split == "pred":
        predict_unlabelled(cfg, model, ds, run_dir, device)
    else:
        evaluate_test(cfg, model, ds, weights, run_dir, device)
    if cfg.deploy:
        from deploy.variants import deploy_run
        deploy_run(run_dir, cfg, model, ds, repeats=cfg.deploy_repeats, threads=cfg.deploy_threads)


@cli_entry
def cli(argv=None):
    main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    cli()
