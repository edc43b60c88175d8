"""Fashion-MNIST scenes for semantic segmentation (M2NIST-style): a few garments pasted on a black canvas,
with a mask that labels every pixel with the class of the garment seen there (0 = background).

`--dataset=fashion-mnist-scenes` (--task=segment) loads them through data/dataset.load_scenes, cached.

Why it is built this way:
- The mask must agree with the image, so pasting and labelling are one rule. A garment pixel is one brighter
  than GARMENT_THRESHOLD. A later garment overwrites the canvas (image and mask) on its garment pixels; its
  faint pixels (the near-black surround and anti-aliased edges) only brighten what is under them, up to the
  threshold, and never change the mask. So `mask > 0` exactly where `image > GARMENT_THRESHOLD`, and a pixel
  labelled k+1 shows a pixel of a class-k garment.
- Every random choice comes from one CPU torch.Generator seeded by `seed` (no numpy or Python RNG), one row
  of draws a scene, so a call gives the same bytes on every machine, the first k scenes of a call are the k
  scenes of a call with count=k, and the chunk size changes nothing.
- Train and val scenes are cut from two disjoint pools of the training garments, test scenes from the test
  garments only: a model never meets, in val or test, a garment it was trained on.
"""
from __future__ import annotations

import torch

from data.folders import DataError
from data.sources import FASHION_CLASSES

SCENE_CLASSES = ("background", *FASHION_CLASSES)  # garment class k is scene class k + 1
# Fashion-MNIST garments are bright on 0, edged by a faint halo of anti-aliasing and noise. 32 (1/8 of full
# scale) leaves the halo out of the mask: 10.8 % of the training images' nonzero pixels are <= 32 (python
# docs/scenes_doc.py). The price: a very dark garment (a black shirt) keeps only its brighter outline.
GARMENT_THRESHOLD = 32
IGNORE_INDEX = 255  # for later loaders with unlabelled pixels; scenes label every pixel
CHUNK = 4096  # scenes pasted at once: bounds the index tensors (CHUNK x 784 int64 = 25 MB), not the result
SEED_STRIDE = 4  # derived seeds 4*seed + k, k < 4: distinct for every (seed, use) pair


def _garments(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The garments as uint8 [N, h, w] and their labels as int64 [N], on the CPU, or a DataError."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() not in (3, 4) \
            or (images.dim() == 4 and images.shape[1] != 1):
        what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"garment images must be uint8 [N, 28, 28] or [N, 1, 28, 28], got {what}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point \
            or labels.dtype.is_complex or labels.dtype == torch.bool:
        what = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise DataError(f"garment labels must be an integer tensor [N], got {what}")
    garments = images.reshape(images.shape[0], *images.shape[-2:]).cpu()
    if len(garments) != len(labels):
        raise DataError(f"{len(garments)} garment images but {len(labels)} labels; pass one label per image")
    if len(garments) == 0:
        raise DataError("no garment images to build scenes from; pass at least one")
    labels = labels.cpu().long()
    if int(labels.min()) < 0 or int(labels.max()) >= len(FASHION_CLASSES):
        raise DataError(f"garment labels must be in 0..{len(FASHION_CLASSES) - 1} (the Fashion-MNIST classes), "
                        f"got {int(labels.min())}..{int(labels.max())}")
    return garments, labels


def _check_sizes(count: int, height: int, width: int, max_items: int, garment: tuple[int, int]) -> None:
    """A ValueError, one line, for a scene size that cannot be built."""
    for name, value in (("count", count), ("height", height), ("width", width), ("max_items", max_items)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if max_items < 1:
        raise ValueError(f"max_items must be 1 or more (garments per scene), got {max_items}")
    gh, gw = garment
    if height < gh or width < gw:
        raise ValueError(f"a {height}x{width} canvas cannot hold a {gh}x{gw} garment; "
                         f"make it at least {gh}x{gw}")


def _empty(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 1, height, width, dtype=torch.uint8), torch.zeros(0, height, width, dtype=torch.uint8)


def build_scenes(images: torch.Tensor, labels: torch.Tensor, count: int, height: int = 64, width: int = 84,
                 max_items: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` scenes of 1..max_items garments (uniform) drawn from `images` at random, each pasted at a random
    position fully inside a height x width canvas, in order (the later wins, see the module's docstring).

    Returns (canvases uint8 [count, 1, height, width], masks uint8 [count, height, width]), on the CPU; mask
    values are scene classes (SCENE_CLASSES). Bad sizes are a ValueError, bad garments a DataError."""
    garments, labels = _garments(images, labels)
    n, gh, gw = garments.shape
    _check_sizes(count, height, width, max_items, (gh, gw))
    if count == 0:
        return _empty(height, width)
    g = torch.Generator().manual_seed(seed)
    # one row of draws a scene, unused slots included, taken modulo each range (2**62 keeps the bias under
    # 1e-13): scene i is the same whatever `count` and however the work is cut
    draws = torch.randint(0, 2 ** 62, (count, 1 + 3 * max_items), generator=g)
    items = draws[:, 0] % max_items + 1
    picks, tops, lefts = draws[:, 1:].reshape(count, 3, max_items).unbind(1)
    picks, tops, lefts = picks % n, tops % (height - gh + 1), lefts % (width - gw + 1)

    canvases = torch.zeros(count * height * width, dtype=torch.uint8)
    masks = torch.zeros(count * height * width, dtype=torch.uint8)
    flat = garments.reshape(n, gh * gw)
    classes = (labels + 1).to(torch.uint8)
    window = (torch.arange(gh)[:, None] * width + torch.arange(gw)[None, :]).reshape(1, -1)  # a garment's offsets
    for start in range(0, count, CHUNK):
        scenes = torch.arange(start, min(start + CHUNK, count))
        for slot in range(max_items):  # in order: a later garment covers an earlier one
            on = scenes[items[scenes] > slot]
            if len(on) == 0:
                break
            pick = picks[on, slot]
            corner = on * (height * width) + tops[on, slot] * width + lefts[on, slot]
            _paste(canvases, masks, (corner[:, None] + window).reshape(-1), flat[pick].reshape(-1),
                   classes[pick].repeat_interleave(gh * gw))
    return canvases.view(count, 1, height, width), masks.view(count, height, width)


def _paste(canvases: torch.Tensor, masks: torch.Tensor, where: torch.Tensor, pixels: torch.Tensor,
           classes: torch.Tensor) -> None:
    """One layer of garments into the flat canvases and masks at the flat indices `where` (no index twice):
    garment pixels overwrite image and mask, faint ones only brighten the image up to the threshold."""
    solid = pixels > GARMENT_THRESHOLD
    canvases[where] = torch.where(solid, pixels, torch.maximum(canvases[where], pixels))
    masks[where[solid]] = classes[solid]


def seed_for(seed: int, use: str) -> int:
    """The seed of one use of a scene_splits call: the garment pools, or one split's scenes."""
    uses = ("pools", "train", "val", "test")
    if use not in uses:
        raise ValueError(f"unknown seed use {use!r}; one of {uses}")
    return SEED_STRIDE * seed + uses.index(use)


def garment_pools(n: int, n_train: int, n_val: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, sorted index sets (train pool, val pool) over `n` training garments, sized in proportion to
    the scenes each split gets (each garment then appears about equally often), neither empty while its split
    has scenes. A seeded permutation picks them, so the pools are the same on every machine."""
    if n_val == 0 or n_train == 0:
        n_val_pool = n if n_train == 0 and n_val > 0 else 0
    else:
        if n < 2:
            raise DataError(f"{n} training garment(s) cannot be split into disjoint train and val pools; "
                            f"pass at least 2")
        n_val_pool = min(max(round(n * n_val / (n_train + n_val)), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, "pools")))
    return order[n_val_pool:].sort().values, order[:n_val_pool].sort().values


def scene_splits(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                 test_labels: torch.Tensor, n_train: int, n_val: int, n_test: int, height: int = 64,
                 width: int = 84, max_items: int = 3, seed: int = 0) -> dict:
    """{"train", "val", "test": (canvases, masks)}: train and val scenes from disjoint pools of the training
    split's garments (garment_pools), test scenes from the test split's garments only, each split with its
    own derived seed (seed_for)."""
    garments, labels = _garments(train_images, train_labels)
    _garments(test_images, test_labels)  # a bad test split stops before any scene is built
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int, 0 or more, got {value!r}")
    _check_sizes(0, height, width, max_items, tuple(garments.shape[-2:]))
    train_pool, val_pool = garment_pools(len(garments), n_train, n_val, seed)
    out = {}
    for split, pool, count in (("train", train_pool, n_train), ("val", val_pool, n_val)):
        out[split] = build_scenes(garments[pool], labels[pool], count, height, width, max_items,
                                  seed_for(seed, split)) if count else _empty(height, width)
    out["test"] = build_scenes(test_images, test_labels, n_test, height, width, max_items, seed_for(seed, "test"))
    return out


def class_pixel_counts(masks: torch.Tensor, num_classes: int = len(SCENE_CLASSES)) -> torch.Tensor:
    """int64 [num_classes]: how many pixels of `masks` carry each class; IGNORE_INDEX pixels are not counted,
    any other value outside 0..num_classes-1 is a DataError."""
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX}, got {num_classes}")
    if not isinstance(masks, torch.Tensor) or masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise DataError(f"masks must be an integer tensor, got {getattr(masks, 'dtype', type(masks).__name__)}")
    values = masks.reshape(-1).cpu()
    if len(values) and (int(values.min()) < 0 or int(values.max()) > 255):
        raise DataError(f"mask values must be in 0..{num_classes - 1} or {IGNORE_INDEX}, "
                        f"got {int(values.min())}..{int(values.max())}")
    counts = torch.bincount(values.to(torch.uint8), minlength=256)
    counts[IGNORE_INDEX] = 0
    if int(counts[num_classes:].sum()):
        bad = int(counts[num_classes:].nonzero()[0]) + num_classes
        raise DataError(f"mask value {bad} is not a class (0..{num_classes - 1}) nor IGNORE_INDEX ({IGNORE_INDEX})")
    return counts[:num_classes]
