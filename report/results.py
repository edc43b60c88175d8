"""Sweep aggregation: every run's summary.json -> out_dir/results.csv (one row per run) and results.md."""
import csv
import io
import json
import math
import os
import sys
from collections import defaultdict

from utils.atomic import atomic_update_text
from utils.names import CONTROL, grid_order
from utils.precision_table import FP32, precision_how
from utils.reports import hparams_text
from utils.run_files import RESULTS_CSV, RESULTS_MD, SUMMARY, is_segment, load_summary, score

COLUMNS = ["run_name", "dataset", "role", "arch", "blocks", "params", "model_bytes", "precision", "precision_how",
           "method", "hparams", "generation", "train_images", "unlabeled_images", "seed", "selected_on", "best_test_acc", "best_val_acc", "final_test_acc", "task", "test_miou",
           "best_val_miou", "final_test_miou", "test_ece", "test_nll",
           "teacher_acc", "teacher_miou", "kd_gain", "train_seconds", "seconds_per_epoch", "images_per_second", "threads", "epochs_run",
           "early_stopped", "qat", "bits_per_weight", "file_bytes", "qat_test_acc", "status", "error"]


def teacher_score(summary: dict):
    """The teacher's score() as a student recorded it (its teacher_acc, or a segmentation's teacher_miou)."""
    return summary.get("teacher_miou" if is_segment(summary) else "teacher_acc")


def score_name(summaries: list) -> str:
    """What score() returns for these runs, as the tables and plots name it."""
    return "test mIoU %" if any(is_segment(s) for s in summaries) else "test acc %"


def quantized(summary: dict) -> bool:
    """A quantization-aware student (--qat): it has its own table (report/qat.py), not the fp32 one's."""
    return (summary.get("qat") or "none") != "none"


def control_precisions(precision) -> tuple:
    """Where a student's CE control is looked for, in order: its own precision, then fp32 (sweeps before the pairing
    trained fp32 controls alone). The one rule of the gains, the scale table and the plots."""
    return (precision or FP32, FP32)


def kd_gain(summary: dict, ce_controls: dict):
    """A distilled student's score at its selected epoch (accuracy, or a segmentation's mIoU: score()) minus its
    same-depth, same-seed, same-precision CE control's
    (control_precisions); None without one."""
    if summary.get("role") != "student" or quantized(summary) or summary.get("method") in (CONTROL, None) \
            or summary.get("status") != "complete" or score(summary) is None:
        return None
    key = (student_key(summary), summary.get("seed"))
    control = next((ce_controls[(*key, p)] for p in control_precisions(summary.get("precision"))
                    if (*key, p) in ce_controls), None)
    return None if control is None else score(summary) - control


def _evaluated_from(cfg) -> str:
    """How much of the schedule --select_from left to choose from, for the results header."""
    share = getattr(cfg, "select_from", 0.0)
    return f" after the first {share:.0%} of each run's epochs, which are not evaluated (--select_from)" if share else ""


def selection_acc(summary) -> float:
    """The score a run's weights were selected on: validation where it has a val split, else test (score())."""
    val = score(summary, "val")
    return val if val is not None else score(summary)


def student_key(summary: dict):
    """Which student a run trained: its depth for the ResidualCNN family (an int, as before), else its arch
    (a timm student, "blocks" None: e.g. "timm-mobilenetv3_small_050")."""
    blocks = summary.get("blocks")
    return blocks if isinstance(blocks, int) else summary.get("arch")


def student_label(key) -> str:
    """res4 for a depth, the arch itself for a timm student."""
    return f"res{key}" if isinstance(key, int) else str(key)


def student_order(key) -> tuple:
    """The ResidualCNN depths first, in depth order, then other students by name."""
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


def ce_controls(summaries: list) -> dict:
    """{(student, seed, precision): score at the selected epoch} of the complete CE-control students among
    `summaries` (student_key)."""
    return {(student_key(s), s.get("seed"), s.get("precision", FP32)): score(s) for s in summaries
            if s.get("role") == "student" and s.get("method") == CONTROL and s.get("status") == "complete"
            and not quantized(s) and score(s) is not None}


def collect_results(out_dir: str, run_dirs: list) -> list:
    """One row per run dir that has a summary.json, with the KD gain against the same-seed CE control."""
    rows = []
    for d in run_dirs:
        s, why = load_summary(d)
        if s is None:  # missing, torn or foreign: the run is not complete, it has no row
            continue
        if why:
            print(f"{os.path.join(d, SUMMARY)}: {why}; left out of the table", file=sys.stderr)
            continue
        rows.append({c: s.get(c) for c in COLUMNS} | {"precision_how": precision_how(s) if s.get("status") == "complete" else "",
                                                       "status": s.get("status"), "error": s.get("error", ""),
                                                       "hardware": s.get("hardware", ""),
                                                       "teacher_run": s.get("teacher_run")})
    ce = ce_controls(rows)
    for r in rows:
        r["kd_gain"] = kd_gain(r, ce)
    return rows


def mean_std(values) -> tuple:
    """(mean, sample std (0 for one value), n) over the values that are finite numbers."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def fmt_ms(values: list, signed: bool = False) -> str:
    m, sd, n = mean_std(values)
    if m is None:
        return "-"
    f = "+.2f" if signed else ".2f"
    return f"{m:{f}} ± {sd:.2f} (n={n})" if n > 1 else f"{m:{f}}"


def _csv_text(rows: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (dict, list))
                        else "" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _method_cell(r: dict) -> str:
    return f"{r['method']} ({hparams_text(r.get('hparams'))})" if r.get("hparams") else str(r["method"])


def fmt_gains(gains: list) -> str:
    """Mean ± std of paired per-seed gains (seed order), then each seed's gain."""
    return fmt_ms(gains, signed=True) + (f": {', '.join(f'{g:+.2f}' for g in gains)}" if len(gains) > 1 else "")


def _gain_cell(rows: list) -> str:
    return fmt_gains([r["kd_gain"] for r in sorted(rows, key=lambda r: r.get("seed") or 0) if r["kd_gain"] is not None])


def _nll_cell(rows: list) -> str:
    """The mean test NLL at the selected epoch (nats; more digits than a percentage needs); '-' for old runs."""
    m, sd, n = mean_std([r.get("test_nll") for r in rows])
    return "-" if m is None else f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}"


def markdown_table(rows: list, seeds: int = 1) -> str:
    ok = [r for r in rows if r["status"] == "complete"]
    teacher = [r for r in ok if r["role"] == "teacher"]
    groups = defaultdict(list)
    for r in ok:
        if r["role"] == "student" and not quantized(r):
            groups[(student_key(r), r["method"], r["precision"], r.get("unlabeled_images") or 0,
                    r.get("generation") or 0)].append(r)
    n = " (mean ± std, n seeds)" if seeds > 1 else ""
    what = score_name(ok)
    lines = [f"| model | params | method (hyper-parameters) | precision (how it ran) | {what} at the selected "
             f"epoch{n} | {what} at the last epoch | KD gain, pts vs the same seed's CE control | ECE % | NLL | "
             f"train s | s/epoch |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in teacher:
        lines.append(f"| teacher {t.get('arch') or t['run_name']} | {t['params']:,} | ce | {t['precision_how']} | "
                     f"{score(t):.2f} | {score(t, 'last'):.2f} | - | {fmt_ms([t.get('test_ece')])} | "
                     f"{_nll_cell([t])} | {t['train_seconds']:.1f} | "
                     f"{t['seconds_per_epoch']:.1f} |")
    for key in sorted(groups, key=lambda k: (student_order(k[0]), grid_order(0, *k[1:3]), k[3], k[4])):
        g = groups[key]
        r0 = g[0]
        transfer = f" + {key[3]:,} unlabeled images" if key[3] else ""
        transfer += f", born-again generation {key[4]}" if key[4] else ""
        lines.append(
            f"| {student_label(key[0])} | {r0['params']:,} | {_method_cell(r0)}{transfer} | {r0['precision_how']} | "
            f"{fmt_ms([score(r) for r in g])} | {fmt_ms([score(r, 'last') for r in g])} | "
            f"{_gain_cell(g) if key[1] != CONTROL else '(control)'} | {fmt_ms([r.get('test_ece') for r in g])} | "
            f"{_nll_cell(g)} | "
            f"{mean_std([r['train_seconds'] for r in g])[0]:.1f} | "
            f"{mean_std([r['seconds_per_epoch'] for r in g])[0]:.1f} |")
    failed = [r for r in rows if r["status"] != "complete"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {r['run_name']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def results_text(out_dir: str, rows: list, cfg) -> tuple:
    """(results.csv text, results.md text) of `rows`."""
    teacher = next((r for r in rows if r["role"] == "teacher" and r["status"] == "complete"), None)
    # a released teacher (--teacher_checkpoint) has no run here: its accuracy as its students recorded it
    used = next((r for r in rows if r["role"] == "student" and r["status"] == "complete"
                 and teacher_score(r) is not None), None)
    dense = any(is_segment(r) for r in rows)
    hw = next((r["hardware"] for r in rows if r["status"] == "complete"), "")
    threads = sorted({r["threads"] for r in rows if r["status"] == "complete" and r.get("threads") is not None})
    if len(threads) > 1:  # e.g. a local sweep and a Ray one in one out_dir: bf16 sums differ with the split of work
        hw += (f"; runs here trained with different torch thread counts ({', '.join(map(str, threads))}; the "
               f"'threads' column), so their digits are not comparable run for run")
    selected = sorted({str(r.get("selected_on")) for r in rows if r["status"] == "complete"})
    head = [f"# Results: {cfg.dataset}, {len(rows)} runs in {out_dir}", "",
            ("Mean IoU in percent over every class, background included (pixel accuracy: results.csv's *_acc "
             "columns), on the test scenes" if dense else "Accuracy in percent on the test split")
            + f", at the epoch selected on the {' / '.join(selected)} split "
            f"(the best one seen{_evaluated_from(cfg)}; 'val' never uses the test images to choose) and at the last "
            f"epoch. KD gain = the "
            f"distilled student's {'mIoU' if dense else 'accuracy'} at its selected epoch minus the CE control's "
            f"(same depth, seed, precision, data order and schedule, no teacher), per seed, then mean ± std over "
            f"seeds. "
            + ("NLL: the selected epoch's mean negative log-likelihood per labeled pixel (nats); no ECE." if dense else
               "ECE: the selected epoch's expected calibration error on the test split (15 equal-width confidence "
               "bins, percent); NLL: its mean negative log-likelihood (nats).")
            + (f" Teacher: {score(teacher):.2f}%." if teacher else
               f" Teacher: {used['teacher_run']}, {teacher_score(used):.2f}% on "
               f"{'these test scenes' if dense else 'its full test split'}." if used else "")
            + (f" Hardware: {hw}." if hw else ""), ""]
    return _csv_text(rows), "\n".join(head) + markdown_table(rows, cfg.seeds) + "\n"


def write_results(out_dir: str, texts: tuple) -> tuple:
    """results.csv and results.md (`texts`, from results_text) under out_dir, left untouched when already
    up to date; their paths."""
    csv_path, md_path = os.path.join(out_dir, RESULTS_CSV), os.path.join(out_dir, RESULTS_MD)
    csv_text, md_text = texts
    atomic_update_text(csv_path, csv_text)
    atomic_update_text(md_path, md_text)
    return csv_path, md_path
