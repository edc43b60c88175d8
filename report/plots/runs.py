"""The training figures of a sweep: learning curves, accuracy vs parameters, KD gain, seconds per epoch.

Every function takes the complete runs of one dataset (report.plots.data.Run), writes one PNG through
report.plots.style.save_figure and returns its path. Over seeds a grid point is drawn once, as
mean ± sample std.
"""
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from report.plots.data import (context_line, group_students, kd_gains, precision_label, score_label, seeds_note,
                               teacher_of)
from report.plots.style import depth_colors, finish_figure, legend_right, plt, save_figure
from report.results import control_precisions, mean_std, student_label, student_order
from utils.names import CE_COLOR, CONTROL, TEACHER_COLOR, method_look, method_order, series_parts
from utils.precision_table import FP32, precision_color, precision_marker, precision_order


def _color(method: str, precision: str) -> str:
    return CE_COLOR if method == CONTROL else precision_color(precision)


def _series_name(method: str, precision: str, runs: list) -> str:
    """"KD fp32", "KD + 20,000 unlabeled fp32", "KD generation 2 fp32" (born-again), or the CE control in its
    precision."""
    if method == CONTROL:
        return f"CE control ({precision_label(runs, precision)}, no teacher)"
    name, unlabeled, generation = series_parts(method)
    tag = f" generation {generation}" if generation else f" + {unlabeled:,} unlabeled" if unlabeled else ""
    return f"{name.upper()}{tag} {precision_label(runs, precision)}"


def mean_curve(runs: list, metric: str) -> tuple:
    """(epochs, mean, std) of history[metric] over runs; an epoch counts the seeds that reached it."""
    per_epoch = {}
    for r in runs:
        for row in r.history:
            if isinstance(row.get(metric), (int, float)) and row.get("epoch") is not None:
                per_epoch.setdefault(row["epoch"], []).append(row[metric])
    epochs = sorted(per_epoch)
    stats = [mean_std(per_epoch[e]) for e in epochs]
    return np.array(epochs), np.array([s[0] for s in stats]), np.array([s[1] for s in stats])


def plot_curves(runs: list, metric: str, ylabel: str, title: str, path: str) -> str:
    """One panel per student precision; colour = depth, solid = distilled, dashed = the CE control (the panel's
    precision's, else the fp32 one: the baseline of every panel), dotted black = the teacher."""
    groups = group_students(runs)
    teacher = teacher_of(runs)
    precisions = sorted({p for (_, m, p) in groups if m != CONTROL}, key=precision_order)
    precisions = precisions or [FP32]
    colors = depth_colors(b for (b, _, _) in groups)
    last_epoch = max((row.get("epoch") or 0 for r in runs for row in r.history), default=1)
    controls = {p for (_, m, p) in groups if m == CONTROL}
    control_of = {p: next((c for c in control_precisions(p) if c in controls), FP32) for p in precisions}
    n = len(precisions)
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n + 0.6, 4.0), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], precisions):
        for (b, m, prec), rs in groups.items():
            if prec != (p if m != CONTROL else control_of[p]):
                continue
            ep, mean, sd = mean_curve(rs, metric)
            if not len(ep):
                continue
            ax.plot(ep, mean, color=colors[b], ls=method_look(m).line, lw=1.1 if m == CONTROL else 1.8,
                    marker="o", ms=3, alpha=0.75 if m == CONTROL else 1.0)
            if len(rs) > 1:
                ax.fill_between(ep, mean - sd, mean + sd, color=colors[b], alpha=0.12, lw=0)
        if teacher is not None:
            ep, mean, _ = mean_curve([teacher], metric)
            ax.plot(ep, mean, color=TEACHER_COLOR, ls=":", lw=1.6, marker="s", ms=3)
        ax.set_title(f"students at {precision_label(runs, p)}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.6, max(last_epoch, 1) + 0.4)
        if last_epoch <= 12:
            ax.set_xticks(range(1, max(last_epoch, 1) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=c, lw=2.5, label=student_label(b)) for b, c in colors.items()]
    handles += [Line2D([], [], color="#333333", ls=method_look(m).line, label=method_look(m).label)
                for m in sorted({k[1] for k in groups}, key=method_order)]
    if teacher is not None:
        handles.append(Line2D([], [], color=TEACHER_COLOR, ls=":", marker="s", ms=3, label=teacher.label))
    if max((len(g) for g in groups.values()), default=1) > 1:
        handles.append(Patch(color="#999999", alpha=0.3, label="± std over seeds"))
    legend_right(fig, handles, title="colour: depth; style: method")
    finish_figure(fig, title, f"{context_line(runs)} | {seeds_note(runs)}; "
                              f"each panel shows the CE control of its precision (else the fp32 one)")
    save_figure(fig, path)
    return path


def _teacher_line(ax, teacher) -> None:
    if teacher is not None and teacher.acc is not None:
        ax.axhline(teacher.acc, color=TEACHER_COLOR, ls="--", lw=1.2,
                   label=f"{teacher.label}: {teacher.acc:.2f}%, {teacher.get('params', 0) / 1e6:.2f}M params")


def plot_accuracy_vs_params(runs: list, path: str) -> str:
    """Test accuracy at the selected epoch against parameters (log x), one series per method x precision, error bars
    over seeds; the teacher as a horizontal line (and a star at its own size)."""
    groups = group_students(runs)
    teacher = teacher_of(runs)
    series = {}
    for (b, m, p), rs in groups.items():
        series.setdefault((m, p), []).append((b, rs))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    n = len(series)
    for i, ((m, p), points) in enumerate(series.items()):
        dodge = 10 ** (0.02 * (i - (n - 1) / 2))  # spread series sideways so error bars stay apart
        xs = np.array([rs[0].get("params", np.nan) for _, rs in points], dtype=float) * dodge
        st = [mean_std([r.acc for r in rs]) for _, rs in points]
        yerr = [s[1] for s in st] if any(s[2] > 1 for s in st) else None
        ax.errorbar(xs, [s[0] for s in st], yerr=yerr, color=_color(m, p),
                    marker="x" if m == CONTROL else precision_marker(p), ms=7, capsize=3, lw=1.0,
                    ls=":" if m == CONTROL else "-", label=_series_name(m, p, runs))
    _teacher_line(ax, teacher)
    if teacher is not None and teacher.acc is not None and teacher.get("params"):
        ax.plot([teacher.get("params")], [teacher.acc], marker="*", ms=14, color=TEACHER_COLOR, ls="none")
    ax.set_xscale("log")
    depth_params = sorted({(rs[0].get("params"), b) for (b, _, _), rs in groups.items() if rs[0].get("params")},
                          key=lambda pb: (pb[0], student_order(pb[1])))
    if depth_params:  # name each depth on a top axis: the reader need not decode parameter counts
        top = ax.secondary_xaxis("top")
        top.set_xticks([pp for pp, _ in depth_params], [student_label(b) for _, b in depth_params], fontsize=8)
        top.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(f"{score_label(runs)}, selected epoch (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    finish_figure(fig, f"{score_label(runs).capitalize()} (selected epoch) vs model size",
                  f"{context_line(runs)} | {seeds_note(runs)}")
    save_figure(fig, path)
    return path


def plot_kd_gain(runs: list, path: str) -> str:
    """Per depth: the CE control's bar and each distilled series' bar (best test accuracy, mean ± std
    over seeds), each distilled bar annotated with its gain over the control in points."""
    groups = group_students(runs)
    teacher = teacher_of(runs)
    gains = kd_gains(runs)
    depths = sorted({b for (b, _, _) in groups}, key=student_order)
    series = sorted({(m, p) for (_, m, p) in groups},
                    key=lambda s: (method_order(s[0]), s[0], precision_order(s[1])))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 + len(depths) * (0.45 + 0.5 * len(series))), 4.6))
    lows, highs = [], []
    for i, (m, p) in enumerate(series):
        xs, bs, means, sds, ns = [], [], [], [], []
        for j, b in enumerate(depths):
            mean, sd, n = mean_std([r.acc for r in groups.get((b, m, p), [])])
            if mean is not None:
                bs.append(b)
                ns.append(n)
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                means.append(mean)
                sds.append(sd)
                lows.append(mean - sd)
                highs.append(mean + sd)
        ax.bar(xs, means, width * 0.92, yerr=sds if any(n > 1 for n in ns) else None, capsize=2,
               color=_color(m, p), alpha=0.9,
               hatch=method_look(m).hatch or None, edgecolor="white", label=_series_name(m, p, runs))
        if m == CONTROL:
            continue
        for x, b, mean, sd in zip(xs, bs, means, sds):
            g, gsd, gn = mean_std(gains.get((b, m, p), []))
            if g is not None:
                label = f"{g:+.1f}" if abs(g) >= 0.05 else "0.0"  # never "-0.0"
                ax.annotate(label + (f"\n±{gsd:.1f}" if gn > 1 else ""), (x, mean + sd), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    _teacher_line(ax, teacher)
    if teacher is not None and teacher.acc is not None:
        highs.append(teacher.acc)
    bottom = max(0.0, np.floor(min(lows) - 5)) if lows else 0.0
    ax.set_ylim(bottom, min(100.0, max(highs) + 6) if highs else 100.0)
    named = any(isinstance(b, str) for b in depths)  # timm students: long names, turned to stay apart
    ax.set_xticks(range(len(depths)), [student_label(b) for b in depths], rotation=20 if named else 0,
                  ha="right" if named else "center")
    ax.set_xlabel("student" if named else "student depth (residual blocks)")
    ax.set_ylabel(f"{score_label(runs)}, selected epoch (%)" + (f", axis from {bottom:.0f}%" if bottom > 0 else ""))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              title="numbers: KD gain over the\nsame-depth CE control (pts)", title_fontsize=8)
    finish_figure(fig, "Distillation vs the CE control by depth", f"{context_line(runs)} | {seeds_note(runs)}")
    save_figure(fig, path)
    return path


def plot_seconds_per_epoch(runs: list, path: str) -> str:
    """Horizontal bars, one per grid point (mean over seeds), teacher on top, then by depth, method,
    precision; the value and throughput written at the end of each bar."""
    groups = group_students(runs)
    teacher = teacher_of(runs)
    rows = []  # (label, colour, [runs], hatch)
    if teacher is not None:
        rows.append((teacher.label, TEACHER_COLOR, [teacher], None))
    for (b, m, p), rs in groups.items():
        rows.append((f"{student_label(b)} {m} {precision_label(runs, p)}", _color(m, p), rs, method_look(m).hatch or None))
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.3 * len(rows)))
    ends = []
    for y, (label, color, rs, hatch) in enumerate(rows):
        mean, sd, n = mean_std([r.get("seconds_per_epoch") for r in rs])
        if mean is None:
            continue
        ips, _, _ = mean_std([r.get("images_per_second") for r in rs])
        ax.barh(y, mean, xerr=sd if n > 1 else None, color=color, hatch=hatch, edgecolor="white",
                capsize=2, height=0.75)
        text = f"{mean:.2f} s" + (f" ± {sd:.2f}" if n > 1 else "") + (f"  ({ips:,.0f} img/s)" if ips else "")
        ax.text(mean + sd + 0.01 * max(mean, 1e-9), y, " " + text, va="center", fontsize=7)
        ends.append(mean + sd)
    prev = None
    for y, (_, _, rs, _) in enumerate(rows):  # a thin rule between depths
        depth = None if rs[0].is_teacher else rs[0].model
        if prev is not None and depth != prev[1]:
            ax.axhline(y - 0.5, color="#bbbbbb", lw=0.6)
        prev = (y, depth)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ends, default=1) * 1.45)
    ax.set_xlabel("seconds per epoch (s, median epoch of a run)")
    ax.grid(alpha=0.3, axis="x")
    present = sorted({p for (_, m, p) in groups if m != CONTROL}, key=precision_order)
    handles = [Patch(color=precision_color(p), label=f"distilled, {precision_label(runs, p)}")
               for p in present]
    handles += [Patch(color=CE_COLOR, label="CE control")]
    if teacher is not None:
        handles.append(Patch(color=TEACHER_COLOR, label="teacher"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    finish_figure(fig, "Training time per epoch",
                  f"{context_line(runs)} | {seeds_note(runs)}; KD runs include the teacher's forward passes")
    save_figure(fig, path)
    return path
