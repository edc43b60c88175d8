"""Deployment trade-off figures from every run's deploy.json: accuracy vs latency, accuracy vs bytes.

deploy.json: {"run_name", "role", "params", "variants": [{"name", "accuracy" (%), "agreement",
"size_bytes", "latency_ms_b1", "throughput_b64", "device", "threads", "status" ("ok"/"skipped"), "note"}]}.
Every (run, variant) with status ok is a point; the Pareto frontier (no other point is at least as
accurate for less or equal cost) is drawn as a step line and its points are labelled.
"""
import math

from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from report.plots.data import context_line, score_label
from report.plots.style import DEPTH_MARKERS, finish_figure, legend_right, plt, save_figure
from report.results import student_label, student_order
from utils.names import TEACHER_COLOR


def pareto_front(costs, accuracies) -> list:
    """Indices of the points no other point beats (lower or equal cost AND higher or equal accuracy,
    better in one), sorted by cost. Of exact duplicates the first is kept."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i], i))
    front, best = [], -math.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def deploy_points(runs: list, cost_key: str) -> tuple:
    """([{model, depth, variant, run, accuracy, cost, where}], number of skipped variants)."""
    seeds = {r.get("seed", 0) for r in runs if r.deploy}
    points, skipped = [], 0
    for r in runs:
        # a segmentation's deploy.json scores its variants by mIoU ("metric"; their "accuracy" is pixel accuracy)
        key = "miou" if isinstance(r.deploy, dict) and r.deploy.get("metric") == "miou" else "accuracy"
        for v in (r.deploy or {}).get("variants", []) if isinstance(r.deploy, dict) else []:
            if v.get("status", "ok") != "ok":
                skipped += 1
                continue
            if _number(v.get(key)) and _number(v.get(cost_key)) and v[cost_key] > 0:
                model = r.label + (f" s{r.get('seed', 0)}" if len(seeds) > 1 and not r.is_teacher else "")
                where = (r.deploy.get("hardware") or "").split("; ISA")[0]  # the flag list is too long here
                where = where or f"{v.get('device') or 'device not recorded'}" + (
                    f", {v['threads']} threads" if v.get("threads") else "")
                points.append({"model": model, "depth": None if r.is_teacher else r.model,
                               "variant": str(v.get("name", "?")), "run": r.name, "accuracy": float(v[key]),
                               "cost": float(v[cost_key]), "where": where})
    return points, skipped


def human_bytes(n: float, _pos=None) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} GB"


def _label_front(fig, ax, front: list, fmt) -> None:
    """Label frontier points up and to the left: nothing lies there (a point there would beat the
    frontier point), so a label covers no data; a label that would overlap the previous one moves up."""
    fig.tight_layout()
    fig.canvas.draw()  # settle the limits and the layout first: overlaps are measured on screen
    renderer = fig.canvas.get_renderer()
    placed = []
    for p in front:
        dy = 6
        for _ in range(12):
            ann = ax.annotate(f"{p['model']} {p['variant']}\n{p['accuracy']:.1f}%, {fmt(p['cost'])}",
                              (p["cost"], p["accuracy"]), xytext=(-6, dy), textcoords="offset points",
                              ha="right", va="bottom", fontsize=7, zorder=5, annotation_clip=False,
                              bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
            ann.remove()
            dy += 9
        placed.append(box)


def plot_deploy_tradeoff(runs: list, cost_key: str, xlabel: str, title: str, path: str) -> str:
    """None when no deploy.json has a measured variant with this cost; else the PNG path."""
    points, skipped = deploy_points(runs, cost_key)
    if not points:
        return None
    variants = sorted({p["variant"] for p in points})
    cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    vcolor = {v: cmap(i % cmap.N) for i, v in enumerate(variants)}
    depths = sorted({p["depth"] for p in points if p["depth"] is not None}, key=student_order)
    marker = {b: DEPTH_MARKERS[i % len(DEPTH_MARKERS)] for i, b in enumerate(depths)}
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    for p in points:
        ax.scatter(p["cost"], p["accuracy"], s=110 if p["depth"] is None else 45, color=vcolor[p["variant"]],
                   marker="*" if p["depth"] is None else marker[p["depth"]], edgecolors="black",
                   linewidths=0.4, zorder=3, alpha=0.9)
    front = pareto_front([p["cost"] for p in points], [p["accuracy"] for p in points])
    fx = [points[i]["cost"] for i in front]
    fy = [points[i]["accuracy"] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1.3, alpha=0.7, zorder=2)
    ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    fmt = human_bytes if cost_key == "size_bytes" else (lambda c: f"{c:.3g} ms")
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.1 * (hi - lo))  # head room for the labels of the most accurate points
    _label_front(fig, ax, [points[i] for i in front], fmt)
    if cost_key == "size_bytes":
        ax.xaxis.set_major_formatter(FuncFormatter(human_bytes))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{score_label(runs)} (%)")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], ls="none", marker="s", ms=8, color=vcolor[v], label=v) for v in variants]
    handles.append(Line2D([], [], ls="none", label=" "))
    handles += [Line2D([], [], ls="none", marker=marker[b], ms=7, mfc="white", mec="black", label=student_label(b))
                for b in depths]
    if any(p["depth"] is None for p in points):
        handles.append(Line2D([], [], ls="none", marker="*", ms=10, mfc="white", mec=TEACHER_COLOR,
                              label="teacher"))
    handles.append(Line2D([], [], color="black", lw=1.3, marker="o", mfc="none", label="Pareto frontier"))
    legend_right(fig, handles, title="colour: variant; marker: model")
    note = f"{context_line(runs)}\nmeasured on {' / '.join(sorted({p['where'] for p in points}))}" \
           + (f" | {skipped} variant(s) skipped (see deploy.json notes)" if skipped else "") \
           + " | frontier: up and left is better"
    finish_figure(fig, title, note)
    save_figure(fig, path)
    return path


def plot_deploy(runs: list, latency_path: str, bytes_path: str) -> list:
    """The two deploy figures that have data; [] when no run has a deploy.json."""
    written = [plot_deploy_tradeoff(runs, "latency_ms_b1", "batch-1 latency (ms, log scale)",
                                    "Deployed variants: accuracy vs latency", latency_path),
               plot_deploy_tradeoff(runs, "size_bytes", "artifact size on disk (bytes, log scale)",
                                    "Deployed variants: accuracy vs size", bytes_path)]
    return [w for w in written if w]
