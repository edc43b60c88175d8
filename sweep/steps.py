"""What the sweep does around the training (sweep/launch.py): the PTQ contrasts the QAT runs are compared with,
built once their fp32 students finish; after the runs, --deploy's variants and the best student's evaluation.
"""
import os

from tqdm import tqdm

import evaluate
from config import Config
from report.results import selection_acc
from runtime.run_dir import is_complete, run_dir_of
from utils.errors import UserError
from utils.run_files import EVALUATION, read_summary


def ptq_contrasts(base: Config, quantized: list) -> None:
    """Post-training quantization of each finished fp32 student the QAT runs start from, at their grids
    (deploy/qat.py): <init run>/ptq.json, the PTQ rows of the quantized table."""
    from deploy.qat import ptq_contrasts_of_run

    inits = {}
    for c in quantized:
        inits.setdefault(c.init_from, set()).add(c.qat)
    for init_dir, modes in tqdm(sorted(inits.items()), desc="PTQ", unit="run"):
        if is_complete(init_dir):
            ptq_contrasts_of_run(init_dir, [m for m in base.sweep_qat if m in modes])


def after_runs(base: Config, runs: list) -> list:
    """--deploy's variants of every finished run, then the best student's evaluation; what could not be saved
    (one line each: the sweep's exit code says so after its table)."""
    if base.deploy:
        deploy_finished(base, runs)
    try:
        evaluate_best_student(runs)
    except UserError as e:  # e.g. a read-only out_dir: the table still comes, and the exit code says so
        return [str(e)]
    return []


def deploy_finished(base: Config, runs: list) -> None:
    from deploy.variants import deploy_run_dir

    for cfg in tqdm(runs, desc="deploy", unit="run"):
        if is_complete(run_dir_of(cfg)) and cfg.qat == "none":  # a QAT run ships its own file (evaluate.py times it)
            deploy_run_dir(run_dir_of(cfg), base)


def evaluate_best_student(runs: list) -> None:
    """evaluation.json + confusion matrix of the most accurate student (the plots show it), chosen on
    the validation accuracy where the runs have one (never on test when they do)."""
    summaries = [(read_summary(run_dir_of(c)), run_dir_of(c)) for c in runs if c.role == "student"]
    done = [(selection_acc(s), d) for s, d in summaries if s is not None and s.get("status") == "complete"]
    if done:
        best = max(done)[1]
        if not os.path.isfile(os.path.join(best, EVALUATION)):
            evaluate.evaluate_run(best)
