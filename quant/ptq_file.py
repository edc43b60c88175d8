"""ptq.json, an fp32 student's post-training quantized contrasts ({mode: row}): written by
quant/students.ptq_contrasts, read here by it (a sweep measures only what is missing) and by the quantized
table (report/qat.py). Torch-free, so the tables and plots read it without the training code."""
import json
import os
import sys

from utils.atomic import read_json_object
from utils.run_files import PTQ_FILE

# the fields of a ptq.json row the table computes with, and their types (bool is no number here)
PTQ_TYPES = {"test_acc": (int, float), "bits_per_weight": (int, float), "packed_bytes": int, "file_bytes": int}


def read_ptq(run_dir: str) -> dict:
    """{mode: row} of a run's ptq.json; {} when it has none (a damaged one is rebuilt by the sweep). A row that
    is no object or has a field of the wrong type is left out, as if never measured (the sweep measures it
    again), with one warning line naming the file and the rows."""
    path = os.path.join(run_dir, PTQ_FILE)
    rows, bad = read_json_object(path) or {}, []
    for mode, row in list(rows.items()):
        why = "not a JSON object" if not isinstance(row, dict) else next(
            (f"{k} is {json.dumps(row.get(k))[:30]}" for k, t in PTQ_TYPES.items()
             if isinstance(row.get(k), bool) or not isinstance(row.get(k), t)), None)
        if why:
            bad.append(f"{mode} ({why})")
            del rows[mode]
    if bad:
        print(f"warning: {path}: row(s) {', '.join(bad)} left out of the table (a sweep with their grid "
              f"measures them again)", file=sys.stderr)
    return rows
