"""results.md's quantization table and its plot: per depth x weight grid x method (PTQ, QAT-CE, QAT-KD),
accuracy (mean ± std over seeds), bits per weight and bytes counted from the deployable files, and the
paired gains of QAT-KD over QAT-CE and over PTQ at the same bits (same depth, same seed)."""
from quant.ptq_file import read_ptq
from report.results import fmt_gains, fmt_ms, mean_std, quantized
from utils.names import CONTROL, DEFAULT_METHOD, QAT_MODES
from utils.precision_table import FP32
from utils.run_files import QUANT_FILE

SERIES = ("PTQ", "QAT-CE", "QAT-KD")


def qat_points(items: list) -> tuple:
    """(points, kd_method) of (summary, run_dir) pairs: {(blocks, mode, series): {seed: row}} of the complete
    QAT runs ('QAT-CE', 'QAT-KD'), the PTQ records of the fp32 students they started from ('PTQ'), and those
    fp32 students and their CE controls (mode 'fp32'). Empty without a QAT run."""
    done = [(s, d) for s, d in items if s.get("role") == "student" and s.get("status") == "complete"
            and isinstance(s.get("blocks"), int)]
    qat = [(s, d) for s, d in done if quantized(s)]
    kd_method = next((s["method"] for s, _ in qat if s.get("method") != CONTROL), DEFAULT_METHOD)
    out = {}
    for s, d in done if qat else []:
        mode, seed = s.get("qat") or "none", s.get("seed")
        if mode != "none":
            series = {CONTROL: "QAT-CE", kd_method: "QAT-KD"}.get(s.get("method"))
            if series:
                out.setdefault((s["blocks"], mode, series), {})[seed] = {
                    "acc": s.get("qat_test_acc"), "bytes": s.get("file_bytes"), "bits": s.get("bits_per_weight")}
        elif s.get("precision") == FP32 and s.get("method") in (CONTROL, kd_method):
            out.setdefault((s["blocks"], FP32, f"fp32 {s['method'].upper()}"), {})[seed] = {
                "acc": s.get("best_test_acc"), "bytes": s.get("model_bytes"), "bits": 32.0}
            for m, r in (read_ptq(d) if s.get("method") == kd_method else {}).items():
                out.setdefault((s["blocks"], m, "PTQ"), {})[seed] = {
                    "acc": r.get("test_acc"), "bytes": r.get("file_bytes"), "bits": r.get("bits_per_weight")}
    return out, kd_method


def _paired(a: dict, b: dict) -> list:
    return [a[s]["acc"] - b[s]["acc"] for s in sorted(a) if s in b and a[s]["acc"] is not None
            and b[s]["acc"] is not None]


def qat_table(pts: dict, kd_method: str) -> str:
    """The markdown table ("" when there are no QAT runs)."""
    if not any(k[1] not in (FP32,) for k in pts):
        return ""
    fp32_kd = f"fp32 {kd_method.upper()}"
    lines = [
        "## Quantized students: post-training (PTQ) vs quantization-aware training (QAT-CE, QAT-KD)",
        "",
        f"Every QAT run starts from the same seed's fp32 {kd_method} student and fine-tunes on the weight grid "
        f"(straight-through estimator); QAT-CE has no teacher, QAT-KD distils from it. PTQ rounds that same "
        f"fp32 student to the grid without training. Accuracy is measured on the test split with the model "
        f"rebuilt from its deployable file ({QUANT_FILE} unpacked to fp32, or the int8 program), "
        f"at the selected epoch (as above); bytes and bits per weight are counted from that file. The first conv "
        f"and the last linear keep 8-bit weights; below int8 activations stay fp32. Gains are paired per seed.",
        "",
        "| model | weights | method | test acc % (mean ± std) | bits / weight | file bytes | x fp32 bytes "
        "| QAT-KD − QAT-CE, pts | QAT-KD − PTQ, pts |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for blocks in sorted({k[0] for k in pts}):
        ref = pts.get((blocks, FP32, fp32_kd), {})
        fp32_bytes = next((r["bytes"] for r in ref.values() if r.get("bytes")), None)
        for series in ("fp32 CE", fp32_kd):
            rows = pts.get((blocks, FP32, series))
            if rows:
                lines.append(f"| res{blocks} | fp32 | {series[5:].lower()} | {fmt_ms([r['acc'] for r in rows.values()])} "
                             f"| 32 | {_bytes(rows):,} | 1.00 | | |")
        for mode in QAT_MODES[1:]:
            kd, ce, ptq = (pts.get((blocks, mode, s), {}) for s in ("QAT-KD", "QAT-CE", "PTQ"))
            for series, rows in (("PTQ", ptq), ("QAT-CE", ce), ("QAT-KD", kd)):
                if not rows:
                    continue
                gains = ("", "")
                if series == "QAT-KD":
                    gains = (fmt_gains(_paired(kd, ce)), fmt_gains(_paired(kd, ptq)))
                b = _bytes(rows)
                ratio = f"{b / fp32_bytes:.3f}" if isinstance(b, (int, float)) and fp32_bytes else "-"
                bits = mean_std([r.get("bits") for r in rows.values()])[0]
                lines.append(f"| res{blocks} | {mode} | {series} | {fmt_ms([r['acc'] for r in rows.values()])} | "
                             f"{bits:.2f} | {b:,} | {ratio} | {gains[0]} | {gains[1]} |" if bits is not None else
                             f"| res{blocks} | {mode} | {series} | - | - | - | - | | |")
    return "\n".join(lines) + "\n"


def _bytes(rows: dict):
    vals = [r.get("bytes") for r in rows.values() if r.get("bytes")]
    return round(sum(vals) / len(vals)) if vals else "-"


def plot_qat(pts: dict, kd_method: str, path: str) -> str:
    """Accuracy vs file bytes (log scale): one series each for PTQ, QAT-CE and QAT-KD, and the fp32 students;
    each point a depth and grid, mean over seeds. Returns the path, or "" with nothing to draw."""
    if not any(k[1] != FP32 for k in pts):
        return ""
    from report.plots.style import plt, save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {"PTQ": ("x", "tab:gray"), "QAT-CE": ("s", "tab:blue"), "QAT-KD": ("o", "tab:red"),
              "fp32 CE": ("^", "tab:cyan"), f"fp32 {kd_method.upper()}": ("D", "black")}
    for series, (marker, color) in styles.items():
        xs, ys, labels = [], [], []
        for (blocks, mode, s), rows in sorted(pts.items()):
            if s != series:
                continue
            acc = mean_std([r["acc"] for r in rows.values()])[0]
            b = _bytes(rows)
            if acc is None or not isinstance(b, (int, float)):
                continue
            xs.append(b)
            ys.append(acc)
            labels.append(f"res{blocks} {mode}")
        if xs:
            ax.scatter(xs, ys, marker=marker, color=color, label=series, zorder=3)
            for x, y, t in zip(xs, ys, labels):
                ax.annotate(t, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("deployable file bytes (log scale)")
    ax.set_ylabel("test accuracy % (mean over seeds)")
    ax.set_title("Quantized students: accuracy vs bytes")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
