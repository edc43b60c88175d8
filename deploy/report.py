"""deploy.md: the measured table, the int8 targets, and the comparison with the fp32 teacher. A segmentation run's
(deploy.json's metric "miou") is judged on mIoU and shows mIoU and pixel accuracy beside the agreement."""
import os

from utils.atomic import read_json
from utils.precision_table import FP32
from utils.run_files import DEPLOY_JSON

# The bar for an int8 student, as ratios to fp32 eager measured in the same process.
TARGET_SPEEDUP_B64 = 2.5  # x fp32 eager throughput at batch 64, at least
TARGET_ACC_DROP = 1.0  # points of the headline score (accuracy, or mIoU) below fp32, at most
TARGET_BYTES_RATIO = 0.3  # x fp32 artifact bytes, at most


def _by_name(result: dict) -> dict:
    return {v["name"]: v for v in result["variants"] if v["status"] == "ok"}


# the headline score's label, and the score columns of the table: (row key, header)
LABELS = {"accuracy": "accuracy", "miou": "mIoU"}
COLUMNS = {"accuracy": (("accuracy", "accuracy %"), ("agreement", "agreement %")),
           "miou": (("miou", "mIoU %"), ("pixel_accuracy", "pixel acc %"), ("agreement", "pixel agreement %"))}


def metric(result: dict) -> str:
    return result.get("metric") or "accuracy"  # (deploy.json files from before segmentation have none)


def ratios(v: dict, ref: dict, score: str = "accuracy") -> dict:
    """Speed and bytes against `ref`, and the points of `score` lost: key f"{score}_drop"."""
    return {"speedup_b64": v["throughput_b64"] / ref["throughput_b64"],
            "speedup_b1": ref["latency_ms_b1"] / v["latency_ms_b1"],
            "bytes_ratio": v["size_bytes"] / ref["size_bytes"],
            f"{score}_drop": ref[score] - v[score]}


def targets(result: dict) -> dict:
    """For each int8 path that ran: its ratios to fp32 eager and whether each target is met."""
    ok, score = _by_name(result), metric(result)
    ref = ok.get(FP32)
    out = {}
    for name in ("int8", "onnx-int8"):
        if ref is None or name not in ok:
            continue
        r = ratios(ok[name], ref, score)
        r["met"] = {"speedup_b64": r["speedup_b64"] >= TARGET_SPEEDUP_B64,
                    f"{score}_drop": r[f"{score}_drop"] <= TARGET_ACC_DROP,
                    "bytes_ratio": r["bytes_ratio"] <= TARGET_BYTES_RATIO}
        out[name] = r
    return out


def find_teacher_deploy(run_dir: str, summary: dict, teacher_dir_name: str):
    """The teacher run's deploy.json: summary.json's teacher_run, else the sibling teacher run dir."""
    candidates = []
    if summary.get("teacher_run"):
        candidates.append(summary["teacher_run"])
    candidates.append(os.path.join(os.path.dirname(os.path.normpath(run_dir)), teacher_dir_name))
    for c in candidates:
        path = os.path.join(c, DEPLOY_JSON)
        if os.path.isdir(c) and os.path.isfile(path) and os.path.abspath(c) != os.path.abspath(run_dir):
            return read_json(path)
    return None


def teacher_sentence(result: dict, teacher: dict):
    """'The int8 res4 student is N x faster and M x smaller than the fp32 teacher, at K points ...'."""
    t = _by_name(teacher).get(FP32) if teacher else None
    ok, score = _by_name(result), metric(result)
    if t is None or not ok or t.get(score) is None:
        return None
    lines = []
    names = [n for n in ("int8", "onnx-int8") if n in ok]
    fastest = max(ok.values(), key=lambda v: v["throughput_b64"])["name"]
    for name in names + ([fastest] if fastest not in names else []):
        v, r = ok[name], ratios(ok[name], t, score)
        d = -r[f"{score}_drop"]
        lines.append(f"The {name} {result['model']} student is {r['speedup_b64']:.1f}x "
                     f"faster (batch-64 throughput; {r['speedup_b1']:.1f}x at batch 1) "
                     f"and {1 / r['bytes_ratio']:.1f}x smaller than the fp32 teacher "
                     f"({teacher['model']}, {teacher['run_name']}), at {abs(d):.2f} points of {LABELS[score]} "
                     f"{'below' if d < 0 else 'above'} it ({v[score]:.2f}% vs {t[score]:.2f}%).")
    return " ".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def render(result: dict, teacher: dict = None) -> str:
    ok, score = _by_name(result), metric(result)
    ref = ok.get(FP32)
    columns = COLUMNS[score]
    lines = [f"# Deployment variants of {result['run_name']}", "",
             f"{result['role']} {result['model']}, {result['params']:,} parameters; {result['test_images']} test "
             f"images; calibration {result['calib_images']} training images; {result['hardware']}; "
             f"latency = median of {result['repeats']} batch-1 calls, throughput = median over "
             f"{result['repeats_b64']} batch-64 calls, rounds interleaved over the variants; torch.inference_mode.",
             ""]
    load = max(result.get("load_average") or [0])
    if load > (result.get("cpus") or 1):
        lines += [f"Warning: the machine was oversubscribed while measuring (1-min load average up to {load:.1f} "
                  f"on {result['cpus']} CPUs): other processes competed for the cores, so absolute times are "
                  f"inflated and multi-threaded eager PyTorch suffers most (a parallel region waits for every "
                  f"thread to be scheduled). Compare ratios, and re-measure on an idle machine.", ""]
    lines += [f"| variant | status | {' | '.join(h for _, h in columns)} | MB | x fp32 bytes | latency b1 ms | "
              "img/s b64 | x fp32 speed b64 | note |",
              "|---|---|" + "---:|" * (len(columns) + 5) + "---|"]
    for v in result["variants"]:
        if v["status"] != "ok":
            lines.append(f"| {v['name']} | skipped |{' |' * (len(columns) + 5)} {v['note']} |")
            continue
        r = ratios(v, ref, score) if ref else None
        bytes_x, speed_x = (f" {r['bytes_ratio']:.2f} ", f" {r['speedup_b64']:.2f} ") if r else (" ", " ")
        lines.append(f"| {v['name']} | ok | {' | '.join(f'{v[k]:.2f}' for k, _ in columns)} | {_mb(v['size_bytes'])} |"
                     f"{bytes_x}| {v['latency_ms_b1']:.2f} | {v['throughput_b64']:.0f} |{speed_x}| {v['note']} |")
    lines += ["", f"Targets for int8 (vs fp32 eager): >= {TARGET_SPEEDUP_B64}x throughput at batch 64, "
                  f"<= {TARGET_ACC_DROP} point {LABELS[score]} drop, <= {TARGET_BYTES_RATIO}x bytes."]
    for name, r in result.get("targets", {}).items():
        met, drop = r["met"], f"{score}_drop"
        lines.append(f"- {name}: {r['speedup_b64']:.2f}x throughput ({'met' if met['speedup_b64'] else 'NOT met'}), "
                     f"{r[drop]:+.2f} points {LABELS[score]} drop ({'met' if met[drop] else 'NOT met'}), "
                     f"{r['bytes_ratio']:.2f}x bytes ({'met' if met['bytes_ratio'] else 'NOT met'}); "
                     f"{r['speedup_b1']:.2f}x at batch 1.")
    if not result.get("targets"):
        lines.append("- no int8 variant ran, so the targets could not be checked.")
    sentence = teacher_sentence(result, teacher) if result["role"] == "student" else None
    lines += ["", sentence if sentence else
              ("This is the teacher run." if result["role"] == "teacher" else
               f"No teacher {DEPLOY_JSON} found (deploy the teacher run first for a student-vs-teacher comparison).")]
    return "\n".join(lines) + "\n"
