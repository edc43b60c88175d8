"""Run directories: what one is called, whether it is complete, which weights it is used by, how it is
loaded back (config, model, data) and whether an interrupted one can resume. train.py, evaluate.py,
deploy/ and run_experiments.py all ask here; nothing here imports the training loop.

A run directory (out_dir/run_name/) can be re-read without the code that wrote it:
model.safetensors, best_model.safetensors, checkpoint.pt (weights-only loadable), history.json,
config.json, summary.json (status "complete" marks a finished run), training_summary.txt. Their names and
the record files' format (summary.json, history.json, checkpoint.pt: keys and schema) are utils/run_files.py's;
RUN_WEIGHTS, DERIVED_FILES, is_complete and run_weights_file are re-exported from there.
"""
import dataclasses
import os
import sys

from config import config_from_dict, config_to_dict, fields_in_scope, student_name
from config import run_dir_of  # noqa: F401 (re-exported: torch-free in cli.py, so the sweep plans without torch)
from data.dataset import load_dataset
from models.teacher_arch import build_model
from models.timm_models import timm_name
from utils.atomic import read_json, read_json_object
from utils.checkpoint import load_weights_into
from utils.errors import UserError, first_line
from utils.names import SEGMENT
from utils.run_files import (BEST_WEIGHTS, CHECKPOINT, CONFIG, DERIVED_FILES, FINAL_WEIGHTS, HISTORY, LOCK_FILE,
                             SUMMARY, check_digest, load_checkpoint, load_history, load_summary, read_summary,
                             run_weights_file, write_history)
from utils.run_files import RUN_WEIGHTS, is_complete  # noqa: F401 (re-exported)

# what evaluate.py may change about a finished run: where and how it runs, evaluation and deployment
RUN_OVERRIDABLE = fields_in_scope("run", "eval", "deploy")
# what must match between a QAT run and the fp32 run it starts from (--init_from): its weights must fit
SAME_MODEL = ("dataset", "image_size", "blocks", "width", "fc_layers", "student_arch")


def remove_derived(run_dir) -> None:
    for name in DERIVED_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def remove_if_bare(run_dir) -> None:
    """A run directory holding nothing but its lock file (a run that stopped before writing anything: a bad
    timm name, an unreadable teacher) is removed, so a failed start leaves no folder behind. The caller holds
    the lock; rmdir fails, and the folder stays, if another process put a file in it meanwhile."""
    try:
        if os.listdir(run_dir) == [LOCK_FILE]:
            os.unlink(os.path.join(run_dir, LOCK_FILE))
            os.rmdir(run_dir)
    except OSError:
        pass


def restore_history(run_dir) -> None:
    """A finished run whose history.json is unreadable gets it back from checkpoint.pt, with the test
    accuracies of the selected and the last epoch from summary.json (they are measured after the last
    checkpoint); one line says so. Nothing happens when history.json reads as a list of epochs."""
    path = os.path.join(run_dir, HISTORY)
    if load_history(run_dir)[0] is not None:
        return
    summary = read_summary(run_dir) or {}
    try:
        history = load_checkpoint(os.path.join(run_dir, CHECKPOINT))["history"]
    except UserError as e:  # CorruptCheckpoint among them
        print(f"{path}: unreadable, and it cannot be rebuilt ({e})", file=sys.stderr)
        return
    for row in history:
        if row.get("epoch") == summary.get("best_epoch"):
            row.setdefault("test_acc", summary.get("best_test_acc"))
            if summary.get("test_ece") is not None:  # (older summaries lack the calibration)
                row.setdefault("test_loss", summary.get("test_nll"))
                row.setdefault("test_ece", summary.get("test_ece"))
    if history:
        history[-1].setdefault("test_acc", summary.get("final_test_acc"))
    write_history(run_dir, history)
    print(f"{path}: unreadable; rewritten from {CHECKPOINT} ({len(history)} epochs)", file=sys.stderr)


def resume_history(run_dir, history: list) -> None:
    """A resumed run's history.json is its checkpoint.pt's history: one that is torn, missing or an epoch
    ahead of the checkpoint (a kill between the two writes) is rewritten from it; one line says so when it
    could not be read."""
    found, why = load_history(run_dir)
    if found == history:
        return
    write_history(run_dir, history)
    if found is None:
        print(f"{os.path.join(run_dir, HISTORY)}: {'unreadable' if why else 'missing'}; rewritten from "
              f"{CHECKPOINT} ({len(history)} epochs)", file=sys.stderr)


def model_label(cfg) -> str:
    if cfg.role == "teacher":
        return f"{cfg.teacher_arch} (teacher)"
    if cfg.student_arch:
        return f"timm {timm_name(cfg.student_arch)} (student)"
    kind = "residual segmenter" if getattr(cfg, "task", "") == SEGMENT else "ResidualCNN"  # models/segment.py
    return f"{kind} res{cfg.blocks} (student)"


def model_arch(cfg) -> str:
    """summary.json's "arch": the teacher's architecture, or the student's (res4, timm-mobilenetv3_small_050)."""
    return cfg.teacher_arch if cfg.role == "teacher" else student_name(cfg)


def model_blocks(cfg):
    """summary.json's "blocks": a ResidualCNN student's depth; None for a teacher and a timm student."""
    return cfg.blocks if cfg.role == "student" and not cfg.student_arch else None


def check_resumable(cfg, run_dir) -> None:
    """A run resumes only with the same values of every field that changes what it learns (scope train)."""
    saved = read_json_object(os.path.join(run_dir, CONFIG)) or {}
    now = config_to_dict(cfg)
    diff = [k for k in fields_in_scope("train") if k in saved and saved[k] != now[k]]
    if diff:
        raise UserError(f"{run_dir}: cannot resume, the config differs from the interrupted run's in "
                        f"{', '.join(diff[:5])}; pass the same values or a new --run_name")


def load_run(run_dir: str, overrides: dict = None):
    """(config, model in eval mode on CPU, dataset, weights path) of a finished run directory; a QAT run's model
    is rebuilt from its deployable file (model.quant.safetensors unpacked to fp32, or the int8 program's state,
    model.int8.safetensors). Every file read is checked against the sha256 its summary records.
    `overrides` may change only fields of scope run, eval and deploy (data_dir, device, batch sizes, ...)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"--run={run_dir}: no such run directory")
    path = os.path.join(run_dir, CONFIG)
    cfg = config_from_dict(read_json(path), path)
    bad = set(overrides or {}) - set(RUN_OVERRIDABLE)
    if bad:
        raise UserError(f"--{sorted(bad)[0]}: fixed by the run's {CONFIG}; evaluate.py takes only "
                        f"--run and {', '.join('--' + k for k in sorted(RUN_OVERRIDABLE) if k != 'run')}")
    cfg = dataclasses.replace(cfg, **(overrides or {}))
    path = run_weights_file(run_dir)
    if path is None:
        raise UserError(f"{run_dir}: no {BEST_WEIGHTS} or {FINAL_WEIGHTS}; is the run finished?")
    summary = read_summary(run_dir)
    check_digest(path, summary)  # each file read is the one the run recorded (runs made before digests: unchecked)
    ds = load_dataset(cfg)
    if cfg.qat != "none":  # a quantized student is what its deployable file holds, rebuilt from it alone
        from quant.students import deploy_file, int8_state_path, load_deployed
        path = os.path.join(run_dir, deploy_file(cfg.qat))
        check_digest(int8_state_path(path) if cfg.qat == "int8" else path, summary)
        return cfg, load_deployed(cfg, path, ds.in_channels, ds.num_classes)[0], ds, path
    # the run's own weights replace any it started from: no ImageNet or student_weights file is read again
    model = build_model(dataclasses.replace(cfg, teacher_pretrained=False, student_weights=""), ds.in_channels,
                        ds.num_classes)
    load_weights_into(model, path)
    return cfg, model.eval(), ds, path


def run_autocast(cfg):
    """What to evaluate a finished run's model under, on the CPU, to measure it as it was measured: autocast in
    the dtype its precision ran in (bf16 for a bf16 run), nothing for fp32 and fp8."""
    from utils.precision import autocast_context

    return autocast_context(cfg.precision, "cpu")


def measure_test_logits(run_dir) -> tuple:
    """(logits, labels, dataset) of a finished run's weights on its test split, measured now (load_run) on the CPU,
    in the precision its own numbers were measured in (run_autocast)."""
    from runtime.inference import predict

    cfg, model, ds, _ = load_run(str(run_dir))
    logits = predict(model, ds.test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last, run_autocast(cfg))
    return logits, ds.test.labels, cfg.dataset


def check_init_from(cfg) -> None:
    """Before any data loads: a QAT run starts from a finished fp32 student of the same model and dataset
    (config_rules.check_qat has checked the flags themselves). The weights it loads: run_weights_file."""
    if cfg.qat == "none" or not cfg.init_from:
        return
    path = os.path.join(cfg.init_from, CONFIG)
    if not os.path.isfile(path):
        raise UserError(f"--init_from={cfg.init_from}: no {CONFIG} there; expected a finished fp32 student's "
                        f"run directory")
    other = read_json(path)
    if not isinstance(other, dict):
        raise UserError(f"--init_from={cfg.init_from}: {path}: not a JSON object of config fields (found "
                        f"{type(other).__name__})")
    if other.get("qat", "none") != "none" or other.get("role") != "student":
        raise UserError(f"--init_from={cfg.init_from}: not an fp32 student run (role {other.get('role')}, "
                        f"qat {other.get('qat', 'none')})")
    now = config_to_dict(cfg)  # as config.json holds it (tuples as lists), as check_resumable compares
    diff = [f"{k} {other.get(k)!r} (this run: {getattr(cfg, k)!r})" for k in SAME_MODEL if other.get(k) != now[k]]
    if diff:
        raise UserError(f"--init_from={cfg.init_from}: another model or dataset: {'; '.join(diff)}")
    summary, why = load_summary(cfg.init_from)
    if why or summary is None or summary.get("status") != "complete":  # interrupted or failed: not its weights
        if why:
            state = f"its {SUMMARY} is unusable: {why}"
        elif summary is not None and summary.get("status") == "failed":
            state = f"it failed: {first_line(summary.get('error'), 120)}"
        else:
            state = f"interrupted, no {SUMMARY}; finish it with --resume=True"
        raise UserError(f"--init_from={cfg.init_from}: not a finished run ({state})")
    if run_weights_file(cfg.init_from) is None:
        raise UserError(f"--init_from={cfg.init_from}: no weights there; is the run finished?")
