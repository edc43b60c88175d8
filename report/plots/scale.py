"""kd_gain_vs_data.png: the distilled student's gain over its CE control against the number of labeled
images (log axis), per student and method: every seed as a point, mean ± std as a line with error bars."""
import numpy as np
from matplotlib.ticker import FuncFormatter

from report.plots.style import DEPTH_MARKERS, depth_colors, finish_figure, plt, save_figure
from report.results import mean_std
from utils.precision_table import FP32


def plot_kd_gain_vs_data(rows: list, path: str, footnote: str) -> str:
    """rows: report.scale.scale_rows (one per size, student and distilled series)."""
    series = {}
    for r in rows:
        series.setdefault((r["model"], r["student"], r["method"], r["precision"]), []).append(r)
    colors = depth_colors([k[0] for k in series])
    methods = sorted({k[2] for k in series})
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    ax.axhline(0.0, color="#888888", lw=1, ls="--")
    for i, ((model, student, method, precision), points) in enumerate(series.items()):
        points = sorted(points, key=lambda r: r["labeled_images"])
        xs = np.array([p["labeled_images"] for p in points], dtype=float)
        stats = [mean_std(p["gain"]) for p in points]
        shift = 1.0 + 0.04 * (i - (len(series) - 1) / 2)  # side by side on the log axis, not on top of each other
        for p in points:
            ax.scatter([p["labeled_images"] * shift] * len(p["gain"]), p["gain"], s=12, alpha=0.45,
                       color=colors[model], marker=DEPTH_MARKERS[methods.index(method) % len(DEPTH_MARKERS)])
        label = f"{student} {method}" + (f" ({precision})" if precision != FP32 else "")
        ax.errorbar(xs * shift, [m for m, _, _ in stats], yerr=[sd for _, sd, _ in stats], color=colors[model],
                    marker=DEPTH_MARKERS[methods.index(method) % len(DEPTH_MARKERS)], capsize=3, lw=1.6, label=label)
    ax.set_xscale("log")
    sizes = sorted({r["labeled_images"] for r in rows})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("labeled training images (log scale)")
    ax.set_ylabel("gain over the CE control, test accuracy points")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              title="line: mean ± std over seeds\npoints: one seed each", title_fontsize=8)
    finish_figure(fig, "Distillation's gain as labeled data grows", footnote)
    save_figure(fig, path)
    return path
