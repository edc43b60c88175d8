"""The one owner of a run's record files: summary.json, history.json and checkpoint.pt. Their names, their
keys and their schema version live here; they are written here (a training run, the sweep's failure
record, the Ray driver, a released teacher) and read through here (train.py, the sweep, evaluate,
deploy, the teacher, results tables, plots, benchmarks). Torch-free to import, so the plots can read
runs without the training code; checkpoint.pt's two functions import torch when called.

Schema 1 is the format these files have always had: its keys are those below, and a file without a
"schema" key is read as schema 1. A file of any other schema is refused with one line (summary.json:
the run counts as unfinished; checkpoint.pt: the run cannot resume). history.json is a JSON list of
epoch rows, so it carries no key of its own: it belongs to the schema of its run's summary.json.
"""
import hashlib
import json
import os
import re

from utils.atomic import atomic_write_json, read_json
from utils.errors import UserError

SCHEMA = 1  # raise it when a key changes meaning or goes; a new optional key needs no new schema
SUMMARY, HISTORY, CHECKPOINT = "summary.json", "history.json", "checkpoint.pt"

# summary.json of a finished run ("status": "complete"), in file order after "schema". The TEACHER_KEYS
# come (after teacher_logits) only when the run learned from a teacher; RELEASE_KEY only in a released
# teacher (teachers/release.py); the QAT_KEYS only in a quantization-aware run.
TEACHER_KEYS = ("teacher_run", "teacher_weights", "teacher_arch", "teacher_acc")
# a quantization-aware student's (--qat, quant/students.py): its grid, the run it started from, its deployable
# file with the bits per weight and bytes counted from it, and the test accuracy of the model rebuilt from it
QAT_KEYS = ("qat", "init_from", "qat_layers", "deploy_file", "bits_per_weight", "packed_bytes", "file_bytes",
            "fp32_bytes", "deploy_how", "qat_test_acc")
COMPLETE_KEYS = (
    "status", "run_name", "role", "dataset", "model", "arch", "blocks", "fc_layers", "params", "model_bytes",
    "image_size", "in_channels", "num_classes", "classes", "train_images", "unlabeled_images", "val_images",
    "test_images", "data_source", "precision", "precision_description", "device", "hardware", "threads", "method",
    "hparams", "seed", "batch_size", "lr", "effective_batch_size", "world_size", "batch_per_rank",
    "data_parallel", "optimizer", "schedule", "epochs", "steps", "epochs_run", "best_epoch", "best_test_acc",
    "best_val_acc", "selected_on", "selected_from_epoch", "final_test_acc", "early_stopped", "stopped_at_epoch",
    "train_seconds", "seconds_per_epoch", "images_per_second", "teacher_logits", *TEACHER_KEYS, *QAT_KEYS,
    "warnings", "provenance", "sha256")
RELEASE_KEY = "release"
# "sha256": {file name: hex digest} of the run's weights and deployable files, recorded when the run finishes
# (and by teachers/release.py); whoever loads one of them checks it (check_digest). Optional: older runs lack it.
DIGEST_KEY = "sha256"
DIGESTED_FILES = ("best_model.safetensors", "model.safetensors", "model.quant.safetensors", "model.int8.pt2",
                  "model.int8.safetensors")
# summary.json of a run that failed ("status": "failed"): what the sweep records (run_experiments.record_failure)
FAILED_KEYS = ("status", "error", "run_name", "role", "dataset", "blocks", "arch", "precision", "method", "seed",
               "qat")  # qat: only a QAT run's

# history.json: one row per epoch with these keys, plus train_<term> per loss term (methods with several
# terms), <val|test>_loss and <val|test>_acc on the epochs judged on that split, and test_loss / test_acc
# on the selected and the last epoch
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "lr", "epoch_seconds", "images_per_second")

# checkpoint.pt (torch, loaded weights-only): everything --resume needs to continue to the same result
CHECKPOINT_KEYS = ("model", "trainable", "optimizer", "scheduler", "scaler", "epoch", "early_stopping", "history",
                   "rng", "elapsed_seconds")

# the fields of a complete summary.json that the table, the plots and the sweep compute with, and their
# types: the accuracy it is selected and reported by must be there; the others, where present, must fit
_NUMBER = (int, float)
SUMMARY_TYPES = {"best_test_acc": _NUMBER}
SUMMARY_OPTIONAL = {"final_test_acc": _NUMBER, "best_val_acc": _NUMBER, "teacher_acc": _NUMBER,
                    "train_seconds": _NUMBER, "seconds_per_epoch": _NUMBER, "images_per_second": _NUMBER,
                    "params": int, "model_bytes": int, "epochs_run": int, "blocks": int, "seed": int,
                    "unlabeled_images": int, "role": str, "run_name": str, "method": str, "precision": str,
                    "hparams": dict, "qat_test_acc": _NUMBER, "bits_per_weight": _NUMBER, "packed_bytes": int,
                    "file_bytes": int, "fp32_bytes": int, "qat": str, DIGEST_KEY: dict, "threads": int}


def schema_defect(record: dict):
    """Why a record of another schema cannot be read, or None (no "schema" key: schema 1)."""
    found = record.get("schema", 1)
    if found == SCHEMA and not isinstance(found, bool):
        return None
    return f"schema {json.dumps(found)[:20]}, not {SCHEMA}: written by another version of this project"


def summary_defect(summary: dict):
    """Why a summary.json cannot be used (another schema; a complete one with a field missing or of the wrong
    type), or None. Such a run counts as unfinished: the sweep redoes it, the table and the plots leave it out."""
    why = schema_defect(summary)
    if why or summary.get("status") != "complete":
        return why
    for fields, required in ((SUMMARY_TYPES, True), (SUMMARY_OPTIONAL, False)):
        for key, types in fields.items():
            value = summary.get(key)
            if value is None and not required:
                continue
            if value is None or isinstance(value, bool) or not isinstance(value, types):
                return f"'{key}' is {json.dumps(value)[:40]}, not {'a number' if types is _NUMBER else types.__name__}"
    return None


def _ordered(values: dict, keys: tuple, optional: tuple = ()) -> dict:
    """{"schema": SCHEMA, key: value...} in the order of `keys`; every key not in `optional` must be there,
    and no other (a programming error, not a user's)."""
    missing = [k for k in keys if k not in values and k not in optional]
    unknown = [k for k in values if k not in keys]
    if missing or unknown:
        raise ValueError(f"summary.json schema {SCHEMA}: missing {missing}, unknown {unknown}")
    return {"schema": SCHEMA, **{k: values[k] for k in keys if k in values}}


def complete_summary(values: dict) -> dict:
    """A finished run's summary.json (COMPLETE_KEYS, the teacher's only when it had one)."""
    return _ordered(values, COMPLETE_KEYS, TEACHER_KEYS + QAT_KEYS + (DIGEST_KEY, "threads"))


def failed_summary(**values) -> dict:
    """A failed run's summary.json (FAILED_KEYS), status "failed"."""
    return _ordered({"status": "failed", **values}, FAILED_KEYS, ("qat",))


def write_summary(run_dir, summary: dict) -> None:
    """summary.json, stamped with the schema (first); a summary that fails summary_defect is never written."""
    summary = {"schema": SCHEMA, **{k: v for k, v in summary.items() if k != "schema"}}
    why = summary_defect(summary) or (None if summary.get("status") in ("complete", "failed") else "no status")
    if why:
        raise ValueError(f"{os.path.join(run_dir, SUMMARY)}: not written, {why}")
    atomic_write_json(os.path.join(run_dir, SUMMARY), summary)


def _read(path, kind):
    """(the file parsed as `kind`, or None; why it cannot be read, or None when it is missing)."""
    if not os.path.isfile(path):
        return None, None
    try:
        obj = read_json(path)
    except UserError as e:
        return None, str(e).removeprefix(f"{path}: ")
    return (obj, None) if isinstance(obj, kind) else (None, f"not a JSON {kind.__name__}")


def load_summary(run_dir) -> tuple:
    """(summary.json as a dict or None, why it cannot be used or None): None and None when it is missing;
    None and a reason when it is torn, binary or not an object; the dict and a reason when summary_defect
    finds one."""
    summary, why = _read(os.path.join(run_dir, SUMMARY), dict)
    return summary, why if summary is None else summary_defect(summary)


def read_summary(run_dir):
    """summary.json as a dict, or None when it is missing or cannot be used (load_summary): the run is then
    not finished."""
    summary, why = load_summary(run_dir)
    return None if why else summary


SIZE_FOLDER = re.compile(r"(n[1-9][0-9]*|all)")  # a data-scaling sweep's folder per labeled size (size_folder)


def size_folder(n: int) -> str:
    """The folder of one labeled size's sweep under a data-scaling sweep's out_dir: n<N>, or all for 0."""
    return f"n{n}" if n else "all"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(run_dir, names) -> dict:
    """{name: sha256} of those of `names` that exist in run_dir: what a summary records under DIGEST_KEY."""
    return {n: sha256_file(os.path.join(run_dir, n)) for n in names if os.path.isfile(os.path.join(run_dir, n))}


def recorded_digests(summary) -> dict:
    """The digests a summary records: its own DIGEST_KEY, else a released teacher's (release.sha256)."""
    summary = summary if isinstance(summary, dict) else {}
    release = summary.get(RELEASE_KEY) if isinstance(summary.get(RELEASE_KEY), dict) else {}
    found = summary.get(DIGEST_KEY) or release.get(DIGEST_KEY) or {}
    return found if isinstance(found, dict) else {}


def check_digest(path, summary) -> None:
    """A file of a finished run is what its summary recorded: one line naming the file otherwise (changed,
    truncated or swapped after the run finished). Files the summary records no digest for pass (older runs)."""
    expected = recorded_digests(summary).get(os.path.basename(path))
    if expected is None:
        return
    found = sha256_file(path)
    if found != expected:
        raise UserError(f"{path}: sha256 {found[:16]}... differs from the {str(expected)[:16]}... its run's "
                        f"{SUMMARY} records: the file was changed or truncated after the run finished; "
                        f"restore it or train the run again")


def write_history(run_dir, history: list) -> None:
    for row in history:
        missing = [k for k in HISTORY_KEYS if k not in row]
        if missing:
            raise ValueError(f"history.json row of epoch {row.get('epoch')}: missing {missing}")
    atomic_write_json(os.path.join(run_dir, HISTORY), history)


def load_history(run_dir) -> tuple:
    """(history.json as a list of epoch rows or None, why it cannot be read or None when it is missing)."""
    return _read(os.path.join(run_dir, HISTORY), list)


def read_history(run_dir):
    """history.json's epoch rows, or None when it is missing or unreadable."""
    return load_history(run_dir)[0]


def save_checkpoint(path, state: dict) -> None:
    """checkpoint.pt (atomic): CHECKPOINT_KEYS, stamped with the schema."""
    from utils.checkpoint import atomic_torch_save

    if set(state) != set(CHECKPOINT_KEYS):
        raise ValueError(f"checkpoint.pt schema {SCHEMA}: keys {sorted(state)}, not {sorted(CHECKPOINT_KEYS)}")
    atomic_torch_save({"schema": SCHEMA, **state}, path)


class CorruptCheckpoint(UserError):
    """checkpoint.pt cannot be read (empty, truncated, not a torch file): the sweep starts that run over."""


def load_checkpoint(path) -> dict:
    """checkpoint.pt for resume: weights-only (tensors, numbers, strings, dicts), never arbitrary code.
    An unreadable one, or one without every CHECKPOINT_KEYS key, raises CorruptCheckpoint (the sweep then
    starts that run over); one of another schema is a UserError (the run cannot resume)."""
    from utils.checkpoint import load_torch_file

    ck = load_torch_file(path, unreadable=CorruptCheckpoint)
    if not isinstance(ck, dict):
        raise CorruptCheckpoint(f"{path}: not a checkpoint this project wrote (not a dict)")
    why = schema_defect(ck)
    if why:
        raise UserError(f"{path}: {why}; it cannot be resumed here (start the run over with --resume=False)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise CorruptCheckpoint(f"{path}: not a checkpoint this project wrote (no {'/'.join(missing)})")
    return ck
