"""A segmentation's pictures: scenes side by side with their truth and each model's labels, one colour per
class (background black, then matplotlib's ten categorical colours, as docs/scenes.png draws them).
Torch-free: arrays in, a PNG out. evaluate.py draws a run against the truth; a sweep adds its teacher and
CE control as more columns."""
import numpy as np
from matplotlib.patches import Patch

from report.plots.style import plt, save_figure

EXAMPLES = 6  # test scenes an examples picture shows, one row each (evaluate.py's and a sweep's)
CLASS_COLOURS = np.array([(0.0, 0.0, 0.0), *plt.get_cmap("tab10").colors])  # class k: row k (11 classes)


def plot_segmentation_examples(images, columns: dict, classes, path, title: str, footnote: str = "") -> None:
    """images uint8 [N, 1, H, W], [N, 3, H, W] (RGB, e.g. VOC) or [N, H, W]; columns {name: label maps int
    [N, H, W]} in order (the truth first, then each model's argmax); one row per scene, the image on the left.
    Classes past the palette take its colours again."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 3:  # RGB: channels last for imshow
        images = images.transpose(0, 2, 3, 1)
    elif images.ndim == 4:
        images = images.reshape(images.shape[0], *images.shape[-2:])
    n, cols = images.shape[0], 1 + len(columns)
    fig, grid = plt.subplots(n, cols, figsize=(1.9 * cols, 1.55 * n + 0.6), squeeze=False)
    for i in range(n):
        grid[i, 0].imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for j, maps in enumerate(columns.values(), start=1):
            labels = np.asarray(maps[i]).astype(np.int64)
            grid[i, j].imshow(CLASS_COLOURS[labels.clip(0) % len(CLASS_COLOURS)], interpolation="nearest")
        for ax in grid[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for j, name in enumerate(["image", *columns]):
        grid[0, j].set_title(name, fontsize=9)
    handles = [Patch(facecolor=CLASS_COLOURS[k % len(CLASS_COLOURS)], edgecolor="#888888", label=f"{k} {c}")
               for k, c in enumerate(classes)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               title="class", title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if footnote:
        fig.text(0.5, -0.01, footnote, ha="center", va="top", fontsize=8, color="#444444")
    save_figure(fig, path, dpi=110)
