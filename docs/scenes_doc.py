"""docs/scenes.png: six Fashion-MNIST scenes (data/scenes.py), each image above its colour-coded mask, with
the class legend; and the numbers docs/data.md quotes about the recipe (how long 10,000 scenes take to build
here, the share of pixels each class gets, how much of a garment the threshold leaves out).

    python docs/scenes_doc.py    # rewrites docs/scenes.png, prints the numbers

Reads the real training split where the machine has it (data/ or Debian's dataset-fashion-mnist); else it
draws synthetic ellipses and says so in the title.
"""
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402  (after the path: the script runs from anywhere)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from data.folders import read_idx  # noqa: E402
from data.scenes import GARMENT_THRESHOLD, SCENE_CLASSES, build_scenes, class_pixel_counts  # noqa: E402
from data.sources import find_fashion  # noqa: E402
from utils.atomic import atomic_write_bytes  # noqa: E402

OUT = ROOT / "docs" / "scenes.png"
SHOWN = 6         # scenes in the picture
COUNTED = 10_000  # scenes behind the printed numbers (and the timing)
SEED = 0
# background black, then matplotlib's ten categorical colours for the ten garment classes
COLOURS = np.array([(0.0, 0.0, 0.0), *plt.get_cmap("tab10").colors])


def training_garments() -> tuple:
    """(images uint8 [N, 28, 28], labels int64 [N], where they come from)."""
    files = find_fashion(ROOT / "data")
    if files is not None:
        images = torch.from_numpy(read_idx(files["train_images"]).copy())
        labels = torch.from_numpy(read_idx(files["train_labels"]).copy()).long()
        return images, labels, "Fashion-MNIST training split"
    return (*synthetic_garments(), "synthetic ellipses: Fashion-MNIST not found")


def synthetic_garments(n: int = 200) -> tuple:
    """Bright ellipses of random size with a dim rim, label i % 10: enough to show the recipe."""
    g = torch.Generator().manual_seed(SEED)
    r, c = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    axes = torch.rand(n, 2, generator=g) * 7 + 5  # half-axes 5..12 px
    d = ((r - 13.5) / axes[:, :1, None]) ** 2 + ((c - 13.5) / axes[:, 1:, None]) ** 2
    images = ((1.2 - d).clamp(0, 1) * 230).to(torch.uint8)
    return images, torch.arange(n) % 10


def figure(canvases: torch.Tensor, masks: torch.Tensor, source: str) -> bytes:
    fig, grid = plt.subplots(2, SHOWN, figsize=(1.9 * SHOWN, 3.4))
    for i in range(SHOWN):
        grid[0, i].imshow(canvases[i, 0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        grid[1, i].imshow(COLOURS[masks[i].long().numpy()], interpolation="nearest")
        for ax in grid[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    grid[0, 0].set_ylabel("image")
    grid[1, 0].set_ylabel("mask")
    handles = [Patch(facecolor=COLOURS[k], edgecolor="#888888", label=f"{k} {name}")
               for k, name in enumerate(SCENE_CLASSES)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               title="scene class", title_fontsize=8)
    fig.suptitle(f"Scenes of 1-3 garments, {canvases.shape[-2]}x{canvases.shape[-1]} (seed {SEED})", fontsize=11)
    fig.tight_layout()
    fig.text(0.5, -0.01, f"{source}; mask = garment class + 1 where the garment pixel > {GARMENT_THRESHOLD}",
             ha="center", va="top", fontsize=8, color="#444444")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def numbers(images: torch.Tensor, labels: torch.Tensor) -> None:
    """The timing and the per-class pixel shares of COUNTED scenes, printed for docs/data.md."""
    build_scenes(images, labels, 100, seed=SEED)  # warm-up: first-call allocations are not the recipe's cost
    start = time.perf_counter()
    _, masks = build_scenes(images, labels, COUNTED, seed=SEED)
    took = time.perf_counter() - start
    print(f"{COUNTED} scenes of 64x84 built in {took:.2f} s ({torch.get_num_threads()} torch threads)")
    counts = class_pixel_counts(masks).double()
    for k, name in enumerate(SCENE_CLASSES):
        print(f"  {k:2d} {name:12s} {100 * float(counts[k] / counts.sum()):5.2f} % of pixels")
    lit = images[images > 0]
    print(f"garment pixels: {100 * float((lit <= GARMENT_THRESHOLD).double().mean()):.1f} % of the nonzero ones "
          f"are <= {GARMENT_THRESHOLD} (left out of the mask)")


def main() -> None:
    images, labels, source = training_garments()
    canvases, masks = build_scenes(images, labels, SHOWN, seed=SEED)
    atomic_write_bytes(OUT, figure(canvases, masks, source))
    print(f"wrote {OUT.relative_to(ROOT)} from {source}")
    numbers(images, labels)


if __name__ == "__main__":
    main()
