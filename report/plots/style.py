"""Matplotlib helpers: every figure is saved to a file (Agg backend), never shown.

Torch-free on purpose: plot_experiment_results.py reads a finished out_dir without the training code.
"""
import io

import matplotlib

from report.results import student_order
from utils.atomic import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path, dpi: int = 120) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion_matrix(cm, classes, path, title: str) -> None:
    """Row-normalised colours, raw counts written in the cells."""
    import numpy as np

    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    save_figure(fig, path)


# --- shared looks of the experiment plots (plot_experiment_results.py, report/plots/*.py) ---
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">")


def depth_colors(depths) -> dict:
    """{blocks: colour}: a sequential map, so deeper reads darker/greener at a glance (timm students, named
    by arch, after the depths)."""
    depths = sorted(set(depths), key=student_order)
    cmap = plt.get_cmap("viridis")
    n = len(depths)
    return {b: cmap(0.1 + 0.75 * i / max(n - 1, 1)) for i, b in enumerate(depths)}


def finish_figure(fig, title: str, footnote: str) -> None:
    """Title on top and the context (dataset, hardware, how many seeds) as a footnote under the axes."""
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.text(0.5, -0.01, footnote, ha="center", va="top", fontsize=8, color="#444444")


def legend_right(fig, handles, title: str = None) -> None:
    """One legend for the whole figure, right of the axes: it never covers data."""
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=title, title_fontsize=8, frameon=False)
