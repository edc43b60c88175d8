"""deploy.md: the measured table, the int8 targets, and the comparison with the fp32 teacher."""
import os

from utils.atomic import read_json
from utils.precision_table import FP32
from utils.run_files import DEPLOY_JSON

# The bar for an int8 student, as ratios to fp32 eager measured in the same process.
TARGET_SPEEDUP_B64 = 2.5  # x fp32 eager throughput at batch 64, at least
TARGET_ACC_DROP = 1.0  # accuracy points below fp32, at most
TARGET_BYTES_RATIO = 0.3  # x fp32 artifact bytes, at most


def _by_name(result: dict) -> dict:
    return {v["name"]: v for v in result["variants"] if v["status"] == "ok"}


def ratios(v: dict, ref: dict) -> dict:
    return {"speedup_b64": v["throughput_b64"] / ref["throughput_b64"],
            "speedup_b1": ref["latency_ms_b1"] / v["latency_ms_b1"],
            "bytes_ratio": v["size_bytes"] / ref["size_bytes"],
            "accuracy_drop": ref["accuracy"] - v["accuracy"]}


def targets(result: dict) -> dict:
    """For each int8 path that ran: its ratios to fp32 eager and whether each target is met."""
    ok = _by_name(result)
    ref = ok.get(FP32)
    out = {}
    for name in ("int8", "onnx-int8"):
        if ref is None or name not in ok:
            continue
        r = ratios(ok[name], ref)
        r["met"] = {"speedup_b64": r["speedup_b64"] >= TARGET_SPEEDUP_B64,
                    "accuracy_drop": r["accuracy_drop"] <= TARGET_ACC_DROP,
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
    ok = _by_name(result)
    if t is None or not ok:
        return None
    lines = []
    names = [n for n in ("int8", "onnx-int8") if n in ok]
    fastest = max(ok.values(), key=lambda v: v["throughput_b64"])["name"]
    for name in names + ([fastest] if fastest not in names else []):
        v, r = ok[name], ratios(ok[name], t)
        d = -r["accuracy_drop"]
        lines.append(f"The {name} {result['model']} student is {r['speedup_b64']:.1f}x "
                     f"faster (batch-64 throughput; {r['speedup_b1']:.1f}x at batch 1) "
                     f"and {1 / r['bytes_ratio']:.1f}x smaller than the fp32 teacher "
                     f"({teacher['model']}, {teacher['run_name']}), at {abs(d):.2f} points of accuracy "
                     f"{'below' if d < 0 else 'above'} it ({v['accuracy']:.2f}% vs {t['accuracy']:.2f}%).")
    return " ".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def render(result: dict, teacher: dict = None) -> str:
    ok = _by_name(result)
    ref = ok.get(FP32)
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
    lines += ["| variant | status | accuracy % | agreement % | MB | x fp32 bytes | latency b1 ms | "
             "img/s b64 | x fp32 speed b64 | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v in result["variants"]:
        if v["status"] != "ok":
            lines.append(f"| {v['name']} | skipped | | | | | | | | {v['note']} |")
            continue
        r = ratios(v, ref) if ref else None
        bytes_x, speed_x = (f" {r['bytes_ratio']:.2f} ", f" {r['speedup_b64']:.2f} ") if r else (" ", " ")
        lines.append(f"| {v['name']} | ok | {v['accuracy']:.2f} | {v['agreement']:.2f} | {_mb(v['size_bytes'])} |"
                     f"{bytes_x}| {v['latency_ms_b1']:.2f} | {v['throughput_b64']:.0f} |{speed_x}| {v['note']} |")
    lines += ["", f"Targets for int8 (vs fp32 eager): >= {TARGET_SPEEDUP_B64}x throughput at batch 64, "
                  f"<= {TARGET_ACC_DROP} point accuracy drop, <= {TARGET_BYTES_RATIO}x bytes."]
    for name, r in result.get("targets", {}).items():
        met = r["met"]
        lines.append(f"- {name}: {r['speedup_b64']:.2f}x throughput ({'met' if met['speedup_b64'] else 'NOT met'}), "
                     f"{r['accuracy_drop']:+.2f} points drop ({'met' if met['accuracy_drop'] else 'NOT met'}), "
                     f"{r['bytes_ratio']:.2f}x bytes ({'met' if met['bytes_ratio'] else 'NOT met'}); "
                     f"{r['speedup_b1']:.2f}x at batch 1.")
    if not result.get("targets"):
        lines.append("- no int8 variant ran, so the targets could not be checked.")
    sentence = teacher_sentence(result, teacher) if result["role"] == "student" else None
    lines += ["", sentence if sentence else
              ("This is the teacher run." if result["role"] == "teacher" else
               f"No teacher {DEPLOY_JSON} found (deploy the teacher run first for a student-vs-teacher comparison).")]
    return "\n".join(lines) + "\n"
