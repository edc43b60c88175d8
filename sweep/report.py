"""The sweep's report, written through report/: results.csv and results.md (the QAT table appended when the
sweep has QAT runs), the TensorBoard hparams table, and a data-scaling sweep's scale.md / scale.csv. Every
file is rewritten only when it changes, so a finished sweep reruns in a read-only out_dir.
"""
import os

from config import Config, run_dir_of
from report.born_again import born_again_table
from report.hparams import write_hparams
from report.qat import qat_points, qat_table
from report.results import collect_results, results_text, write_results
from report.scale import write_scale_report
from utils.errors import cannot_write
from utils.lock import table_lock
from utils.atomic import read_json_object
from utils.run_files import BORN_AGAIN, read_summary


def quantized_table(run_dirs: list) -> str:
    """results.md's table of the quantized students (report/qat.py), "" when the sweep has none."""
    items = [(s, d) for d in run_dirs for s in [read_summary(d)] if isinstance(s, dict)]
    points, kd_method = qat_points(items)
    table = qat_table(points, kd_method)
    return "\n" + table if table else ""


def write_report(base: Config, runs: list, unsaved: list) -> None:
    """Print the table and write results.csv / results.md (and the hparams table) of every run under out_dir,
    not only this grid's: a narrower rerun never shrinks the table. Under the out_dir's table lock, so a second
    sweep's table comes after this one's, from every run finished by then. What cannot be written goes to
    `unsaved` (the table's own line first)."""
    grid_dirs = [run_dir_of(c) for c in runs]
    with table_lock(base.out_dir):
        others = sorted(os.path.join(base.out_dir, d) for d in os.listdir(base.out_dir)
                        if os.path.join(base.out_dir, d) not in grid_dirs)  # collect_results skips any without a summary
        rows = collect_results(base.out_dir, grid_dirs + others)
        texts = results_text(base.out_dir, rows, base)
        born_again = read_json_object(os.path.join(base.out_dir, BORN_AGAIN))
        texts = (texts[0], texts[1] + quantized_table(grid_dirs + others) + born_again_table(born_again))
        if base.tensorboard:
            try:
                write_hparams(base.out_dir, rows)
            except OSError as e:
                unsaved.append(str(cannot_write(e, base.out_dir, "no TensorBoard hparams table")))
        print(texts[1])
        try:
            csv_path, md_path = write_results(base.out_dir, texts)
            print(f"results: {csv_path}, {md_path}")
        except OSError as e:
            unsaved.insert(0, str(cannot_write(e, base.out_dir, "the table above is not saved; pass a writable "
                                                                 "--out_dir to keep it")))


def scale_report(out_dir: str) -> None:
    """<out_dir>/scale.md and scale.csv across the size folders (report/scale.py); prints the table."""
    print(write_scale_report(out_dir))
