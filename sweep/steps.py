"""What the sweep does around the training (sweep/launch.py): the PTQ contrasts the QAT runs are compared with,
built once their fp32 students finish; after the runs, --deploy's variants and the best student's evaluation.
"""
import json
import os

from tqdm import tqdm

import evaluate
from config import Config
from report.born_again import born_again_record
from report.results import selection_acc
from runtime.inference import evaluate_logits
from runtime.run_dir import is_complete, measure_test_logits, run_dir_of
from utils.atomic import atomic_update_text, read_json_object
from utils.errors import UserError, cannot_write
from utils.names import SEGMENT
from utils.run_files import BEST_WEIGHTS, BORN_AGAIN, DIGEST_KEY, EVALUATION, read_summary


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
    """--deploy's variants of every finished run, the born-again ensembles, then the best student's evaluation (and
    a segmentation sweep's examples picture, sweep/seg_examples.py);
    what could not be saved (one line each: the sweep's exit code says so after its table)."""
    if base.deploy:
        deploy_finished(base, runs)
    try:
        born_again_ensembles(base, runs)
        evaluate_best_student(runs)
        if base.task == SEGMENT:
            from sweep.seg_examples import draw_segmentation_examples
            draw_segmentation_examples(base, runs)
    except UserError as e:  # e.g. a read-only out_dir: the table still comes, and the exit code says so
        return [str(e)]
    return []


def born_again_ensembles(base: Config, runs: list) -> None:
    """--sweep_generations: per depth and seed whose generations all finished, the mean of generations 1..N's test
    logits with the CE control's (generation 0) accuracy: out_dir/born_again.json. A chain recorded there with the
    same generations' weights (their summaries' digests) is kept as it is; any other is measured now."""
    chains = {}
    for c in runs:
        if c.generation:
            chains.setdefault((c.blocks, c.seed), []).append(c)
    path = os.path.join(base.out_dir, BORN_AGAIN)
    before = (read_json_object(path) if os.path.isfile(path) else None) or {}
    known = {tuple(c.get("generations") or ()): c for c in before.get("chains") or [] if isinstance(c, dict)}
    measured = []
    for (blocks, seed), gens in tqdm(sorted(chains.items()), desc="born-again ensembles", unit="chain"):
        gens.sort(key=lambda c: c.generation)
        control = read_summary(gens[0].teacher_checkpoint)
        dirs = [run_dir_of(c) for c in gens]
        if control is None or not all(is_complete(d) for d in dirs):
            continue
        names, summaries = [os.path.basename(d) for d in dirs], [read_summary(d) for d in dirs]
        weights = [(s.get(DIGEST_KEY) or {}).get(BEST_WEIGHTS) for s in summaries]
        old = known.get(tuple(names))
        if old is not None and all(weights) and old.get("weights_sha256") == weights:
            measured.append({**old, "control_acc": control["best_test_acc"]})
            continue
        total, labels = None, None
        for d in dirs:
            logits, labels, _ = measure_test_logits(d)
            total = logits if total is None else total + logits
        measured.append({"student": blocks, "seed": seed, "generations": names,
                         "generation_acc": [s["best_test_acc"] for s in summaries],
                         "ensemble_acc": evaluate_logits(total / len(dirs), labels)[1],
                         "control_acc": control["best_test_acc"], "weights_sha256": weights})
    if measured:
        try:
            atomic_update_text(path, json.dumps(born_again_record(measured), indent=1) + "\n")
        except OSError as e:
            raise cannot_write(e, base.out_dir, "no born-again ensembles") from None


def deploy_finished(base: Config, runs: list) -> None:
    from deploy.variants import deploy_run_dir

    for cfg in tqdm(runs, desc="deploy", unit="run"):
        if is_complete(run_dir_of(cfg)) and cfg.qat == "none":  # a QAT run ships its own file (evaluate.py times it)
            deploy_run_dir(run_dir_of(cfg), base)


def evaluate_best_student(runs: list) -> None:
    """evaluation.json + confusion matrix (a segmentation's: per-class IoU and its examples picture) of the best
    student (the plots show it), chosen on the validation score where the runs have one (never on test)."""
    summaries = [(read_summary(run_dir_of(c)), run_dir_of(c)) for c in runs if c.role == "student"]
    done = [(selection_acc(s), d) for s, d in summaries if s is not None and s.get("status") == "complete"]
    if done:
        best = max(done)[1]
        if not os.path.isfile(os.path.join(best, EVALUATION)):
            evaluate.evaluate_run(best)
