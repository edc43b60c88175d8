"""The sweep's table as TensorBoard hparams (`tensorboard --logdir <out_dir>`, HPARAMS tab): <out_dir>/tb_hparams/,
one record per finished student (method, depth, precision, seed, method hyper-parameters -> selected test and
val accuracy, KD gain). The per-run event files are utils/tensorboard.py's."""
import json
import os
import shutil

from utils.atomic import atomic_update_text
from utils.run_files import HPARAMS_DIR, HPARAMS_JSON, score
from utils.tensorboard import writer_class


def _hparam_value(v):
    """TensorBoard's hparams take numbers, strings and booleans; anything else is shown as text."""
    return v if isinstance(v, (int, float, str, bool)) else str(v)


def write_hparams(out_dir: str, rows: list) -> None:
    """<out_dir>/tb_hparams/<run>: the sweep's table as TensorBoard hparams, rebuilt from every finished run
    when it changed (<out_dir>/tb_hparams.json holds what it shows: a rerun that changes nothing writes
    nothing, so it also works in a read-only out_dir). An unwritable out_dir raises OSError here, before
    any event file is opened (TensorBoard's writer thread would print its own traceback)."""
    records = []
    for r in rows:
        if r.get("status") != "complete" or r.get("role") != "student":
            continue
        params = {"method": r.get("method"), "arch": r.get("arch"), "precision": r.get("precision"),
                  "seed": r.get("seed"), "train_images": r.get("train_images"),
                  **{f"{r.get('method')}.{k}": v for k, v in (r.get("hparams") or {}).items()}}
        # a segmentation's mIoU under the same names (score()): its kd_gain is in mIoU points
        metrics = {"hparams/test_acc": score(r), "hparams/val_acc": score(r, "val"),
                   "hparams/kd_gain": r.get("kd_gain")}
        records.append([r["run_name"], {k: _hparam_value(v) for k, v in params.items() if v is not None},
                        {k: v for k, v in metrics.items() if isinstance(v, (int, float))}])
    writer = writer_class()
    if writer is None or not atomic_update_text(os.path.join(out_dir, HPARAMS_JSON),
                                                json.dumps(records, indent=1) + "\n"):
        return
    root = os.path.join(out_dir, HPARAMS_DIR)
    shutil.rmtree(root, ignore_errors=True)  # rebuilt whole: a rerun never shows a run twice
    for name, params, metrics in records:
        with writer(os.path.join(root, name)) as w:
            w.add_hparams(params, metrics, run_name=".")
