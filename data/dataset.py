"""Datasets -> uint8 tensor cache -> tensors on any device.

Each dataset (found and decoded by data/sources.py; images with masks by data/seg_folders.py) is
decoded once into uint8 [N, C, H, W] tensors saved as
<data_dir>/cache/<dataset>-<size>px.safetensors (no pickle: the class names, the
source fingerprint and the train mean/std live in the safetensors metadata).
The cache is rebuilt when a source file's path, size or mtime changes; the image
size is part of the file name. Batches are normalized and augmented as tensors
(data/transforms.py), so the same code runs on CPU and GPU.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from data import folders
from data.folders import DataError
from data import scenes, seg_folders
from data.sources import CIFAR, Source, labelled_tensors, cifar_source, fashion_source, folder_source
from utils.atomic import atomic_write_to

__all__ = ["DataError", "Split", "Dataset", "load_dataset", "load_pred_images", "split_train_val",
           "stratified_subset"]

SCENES = "fashion-mnist-scenes"  # config_rules.MASK_DATASETS: Fashion-MNIST garments pasted on a canvas (scenes.py)
MASK_IGNORE = scenes.IGNORE_INDEX  # a mask pixel without a label (VOC's 255); batches carry it as -1
# masks read from files (data/seg_folders.py), also config_rules.MASK_DATASETS
SEG_FOLDERS = {"voc": seg_folders.voc_source, "segfolder": seg_folders.segfolder_source}
# a scene's native size: the shorter side of the default canvas (its --scene_canvas is the real one); VOC's photos
# (about 500x375) go to 128 px, where its objects stay recognisable and a segmenter still trains on a CPU
NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "intel": 150, "imagefolder": 64, SCENES: 64,
               "voc": 128, "segfolder": 64}
CACHE_FORMAT = "kd-uint8-cache-1"  # bump when the cache layout changes: old files are rebuilt


@dataclass(frozen=True)
class Split:
    """One split: uint8 images [N, C, H, W] and int64 labels [N], on the CPU or on the training device."""

    images: torch.Tensor  # uint8 [N, C, H, W], contiguous
    labels: torch.Tensor  # int64 [N]; a segmentation's masks: uint8 [N, H, W], a class per pixel (255: none)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


VAL_SEED = 12345  # the validation hold-out is the same images for every run of a dataset, teacher included
UNLABELED = -1  # the label of a transfer-set image: its true label never leaves load_dataset
UNLABELED_SEED = 7919  # mixed with the run's seed: which of the images left over are the transfer set


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split  # the training images of this run (max_train_samples of what val leaves), then any unlabeled ones
    test: Split
    val: Optional[Split]  # val_fraction of the whole train split, never trained on; None when val_fraction=0
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, train images scaled to [0, 1], whole train cache
    std: tuple[float, ...]
    source: str              # where the files were found, for summaries
    unlabeled: int = 0       # the last `unlabeled` images of train are the transfer set, labeled UNLABELED

    @property
    def labeled(self) -> int:
        return len(self.train) - self.unlabeled

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def image_shape(self) -> tuple:
        """(C, H, W) of an input: what feature adapters are sized for (a scene's canvas need not be square)."""
        return tuple(int(s) for s in self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- cache

def fingerprint(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cache_defect(tensors: dict, meta: dict):
    """Why decoded tensors cannot be what their metadata says (None when they can): every <split>_images
    uint8 [N, C, S, S] at the metadata's image size (a scene cache: [N, C, H, W] at its "canvas"), its
    <split>_labels int64 [N] within the classes (masks: uint8 [N, H, W], a class or MASK_IGNORE per pixel)."""
    canvas = json.loads(meta["canvas"]) if "canvas" in meta else None
    size = int(meta.get("image_size", 0))
    hw = tuple(canvas) if canvas else (size, size)
    try:
        classes = len(json.loads(meta["classes"])) if "classes" in meta else None
    except (ValueError, TypeError):
        return "unreadable class names"
    for key, x in tensors.items():
        if not key.endswith("images"):
            continue
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[-2:]) != hw:
            return f"{key} is {x.dtype} {tuple(x.shape)}, not uint8 [N, C, {hw[0]}, {hw[1]}]"
        y = tensors.get(key[:-len("images")] + "labels")
        if y is None:
            continue
        want = (torch.uint8, (len(x), *hw)) if canvas else (torch.int64, (len(x),))
        if y.dtype != want[0] or tuple(y.shape) != want[1]:
            return f"{key[:-6]}labels is {y.dtype} {tuple(y.shape)}, not {str(want[0])[6:]} {list(want[1])}"
        bad = y[y != MASK_IGNORE] if canvas else y
        if len(bad) and (int(bad.min()) < 0 or (classes is not None and int(bad.max()) >= classes)):
            return f"{key[:-6]}labels outside 0..{(classes or 1) - 1}"
    return None


def _read_cache(path: Path, want: dict[str, str]):
    """The cache's (tensors, metadata) when it is the one wanted and whole; else None (decoded again and
    overwritten), with one line when the file was there but wrong inside."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if any(meta.get(k) != v for k, v in want.items()):
            return None
        tensors = load_file(str(path))
    except Exception:  # truncated or foreign file: decode again and overwrite it
        return None
    why = cache_defect(tensors, meta)
    if why:
        print(f"{path}: {why}; rebuilding", file=sys.stderr, flush=True)
        return None
    return tensors, meta


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    try:
        atomic_write_to(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                                    metadata=meta))
    except OSError as e:  # read-only data dir: the run works, only the next one is slow again
        print(f"warning: could not write the data cache {path} ({e}); it will be decoded again next time",
              file=sys.stderr)


def _cached(cache_file: Path, source: Source, size: int, workers: int):
    want = {"format": CACHE_FORMAT, "fingerprint": fingerprint(source.root, source.files),
            "image_size": str(size)}
    hit = _read_cache(cache_file, want)
    if hit is not None:
        return hit
    tensors, meta = source.build(size, workers)
    meta = {**meta, **want, "source": source.desc}
    _write_cache(cache_file, tensors, meta)
    return tensors, meta


# ----------------------------------------------------------------------------- public API

def _image_size(cfg) -> int:
    if cfg.dataset not in NATIVE_SIZE:
        raise DataError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(NATIVE_SIZE)}")
    size = int(cfg.image_size) or NATIVE_SIZE[cfg.dataset]
    if size < 0:
        raise DataError(f"image_size must be >= 0 (0 = the dataset's native size), got {cfg.image_size}")
    return size


def _subset_index(split: Split, n: int, seed: int) -> Optional[torch.Tensor]:
    """The indices of the seeded, class-stratified subset of n images; None for the whole split."""
    return None if n <= 0 or n >= len(split) else stratified_subset(split.labels, n, seed)


def _take(split: Split, idx: Optional[torch.Tensor]) -> Split:
    return split if idx is None else Split(split.images.index_select(0, idx), split.labels.index_select(0, idx))


def _subset(split: Split, n: int, seed: int) -> Split:
    return _take(split, _subset_index(split, n, seed))


def load_dataset(cfg) -> Dataset:
    """Train/val/test uint8 tensors of cfg.dataset, from the cache (decoded and saved the first time).
    The validation hold-out is carved from the whole train split first, with a fixed seed, so it is the
    same for every run (a teacher never trains on a student's validation images); the run's training
    subset (max_train_samples, seeded by cfg.seed) comes from what is left, and a transfer set
    (unlabeled_samples, labels dropped here) from what the labeled subset leaves, appended after it."""
    size = _image_size(cfg)
    data_dir = Path(cfg.data_dir).expanduser()
    name = cfg.dataset
    if name == SCENES:
        return load_scenes(cfg, data_dir)
    if name in SEG_FOLDERS:
        return load_masks(cfg, data_dir, SEG_FOLDERS[name](data_dir), size)
    if name == "fashion-mnist":
        source = fashion_source(data_dir)
    elif name in CIFAR:
        source = cifar_source(name, data_dir)
    else:
        source = folder_source(name, data_dir)
    t, meta = _cached(data_dir / "cache" / f"{name}-{size}px.safetensors", source, size, cfg.num_workers)
    train, val = split_train_val(Split(t["train_images"], t["train_labels"]), cfg.val_fraction, VAL_SEED)
    labeled_idx = _subset_index(train, cfg.max_train_samples, cfg.seed)
    labeled = _take(train, labeled_idx)
    n_unlabeled = getattr(cfg, "unlabeled_samples", 0)  # (configs made by hand, e.g. a benchmark's, may lack it)
    unlabeled = transfer_set(train, labeled_idx, n_unlabeled, cfg.seed) if n_unlabeled else None
    return Dataset(
        name=name,
        train=labeled if unlabeled is None else Split(torch.cat([labeled.images, unlabeled.images]),
                                                      torch.cat([labeled.labels, unlabeled.labels])),
        unlabeled=0 if unlabeled is None else len(unlabeled),
        test=_subset(Split(t["test_images"], t["test_labels"]), cfg.max_test_samples, cfg.seed),
        val=val,
        classes=tuple(json.loads(meta["classes"])),
        mean=tuple(json.loads(meta["mean"])),
        std=tuple(json.loads(meta["std"])),
        source=meta["source"],
    )


def pixel_labels(masks: torch.Tensor) -> torch.Tensor:
    """uint8 masks [N, H, W] as the losses and metrics take them: int64, a pixel without a label (MASK_IGNORE)
    -1, like an unlabeled image (utils/segmentation.IGNORE)."""
    y = masks.long()
    return y.masked_fill_(masks == MASK_IGNORE, -1)


def load_scenes(cfg, data_dir: Path) -> Dataset:
    """Fashion-MNIST scenes (data/scenes.py) from the Fashion-MNIST cache, built once per size and count and cached
    beside it: scene_count training scenes, val_fraction of them the hold-out, pasted from a disjoint pool of
    training garments, and scene_test_count test scenes from the test garments. The same scenes for every run
    (seed 0); max_train_samples takes a seeded subset of the training scenes."""
    fashion = fashion_source(data_dir)
    f, _ = _cached(data_dir / "cache" / f"fashion-mnist-{NATIVE_SIZE['fashion-mnist']}px.safetensors", fashion,
                   NATIVE_SIZE["fashion-mnist"], cfg.num_workers)
    (h, w), n_val = cfg.scene_canvas, int(round(cfg.val_fraction * cfg.scene_count))
    n_train = cfg.scene_count - n_val
    if n_train < 2:
        raise DataError(f"--scene_count={cfg.scene_count} with --val_fraction={cfg.val_fraction} leaves {n_train} "
                        f"training scene(s); at least 2 are needed")

    def build(_size, _workers):
        s = scenes.scene_splits(f["train_images"], f["train_labels"], f["test_images"], f["test_labels"], n_train,
                                n_val, cfg.scene_test_count, h, w, cfg.scene_items)
        tensors, meta = labelled_tensors(*s["train"], *s["test"], scenes.SCENE_CLASSES)
        tensors.update({"val_images": s["val"][0], "val_labels": s["val"][1]})
        return tensors, {**meta, "canvas": json.dumps([h, w])}

    key = f"{SCENES}-{h}x{w}-{cfg.scene_items}items-{n_train}-{n_val}-{cfg.scene_test_count}"
    source = Source(fashion.root, fashion.files, f"{fashion.desc}, pasted into {h}x{w} scenes", build)
    t, meta = _cached(data_dir / "cache" / f"{key}.safetensors", source, h, cfg.num_workers)
    val = Split(t["val_images"], t["val_labels"]) if n_val else None
    return _mask_dataset(cfg, Split(t["train_images"], t["train_labels"]), val, t, meta)


def load_masks(cfg, data_dir: Path, source: Source, size: int) -> Dataset:
    """Images and masks read from files (data/seg_folders.py), cached at size x size: val_fraction of the training
    split is the hold-out, a seeded draw (VAL_SEED, so the same images for every run; a mask has no one class
    to stratify by), and max_train_samples takes a subset of the rest seeded by cfg.seed."""
    t, meta = _cached(data_dir / "cache" / f"{cfg.dataset}-{size}px.safetensors", source, size, cfg.num_workers)
    whole = Split(t["train_images"], t["train_labels"])
    n_val = max(1, int(round(cfg.val_fraction * len(whole)))) if cfg.val_fraction > 0 else 0
    if len(whole) - n_val < 2:
        raise DataError(f"{source.root}: {len(whole)} training image(s) with --val_fraction={cfg.val_fraction} "
                        f"leave {len(whole) - n_val} to train on; at least 2 are needed")
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(VAL_SEED))
    val = _take(whole, order[:n_val].sort().values) if n_val else None
    return _mask_dataset(cfg, _take(whole, order[n_val:].sort().values), val, t, meta)


def _mask_dataset(cfg, train: Split, val: Optional[Split], t: dict, meta: dict) -> Dataset:
    """A dataset of masks: max_train_samples a subset of `train` seeded by cfg.seed, max_test_samples the first
    test images."""
    if 0 < cfg.max_train_samples < len(train):
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(int(cfg.seed)))
        train = _take(train, pick[:cfg.max_train_samples].sort().values)
    test = Split(t["test_images"], t["test_labels"])
    if 0 < cfg.max_test_samples < len(test):
        test = _take(test, torch.arange(cfg.max_test_samples))
    return Dataset(name=cfg.dataset, train=train, test=test, val=val, classes=tuple(json.loads(meta["classes"])),
                   mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])), source=meta["source"])


def transfer_set(train: Split, labeled_idx: Optional[torch.Tensor], n: int, seed: int) -> Split:
    """`n` images of `train` (what the validation hold-out leaves) outside the run's labeled images
    `labeled_idx` (None: all of them), so outside val, test and the labeled subset, drawn uniformly with a
    seeded generator, their labels replaced by UNLABELED: what the student knows of them comes from the
    teacher alone."""
    taken = torch.ones(len(train), dtype=torch.bool)
    if labeled_idx is not None:
        taken.zero_()
        taken[labeled_idx] = True
    rest = torch.nonzero(~taken).squeeze(1)
    if n > len(rest):
        raise DataError(f"--unlabeled_samples={n}: only {len(rest)} training images are left beside the "
                        f"labeled ones (--max_train_samples) and the validation hold-out; ask for at most {len(rest)}")
    pick = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(UNLABELED_SEED + seed))[:n]]
    pick = pick.sort().values
    return Split(train.images.index_select(0, pick), torch.full((n,), UNLABELED, dtype=torch.int64))


def load_pred_images(cfg) -> tuple[torch.Tensor, list[str]]:
    """Intel's unlabelled seg_pred images as uint8 NCHW, with their paths relative to the pred folder."""
    if cfg.dataset != "intel":
        raise DataError(f"unlabelled prediction images exist only for --dataset=intel (seg_pred/), not {cfg.dataset!r}")
    size = _image_size(cfg)
    data_dir = Path(cfg.data_dir).expanduser()
    pred_dir = folders.intel_pred_dir(data_dir)
    paths = folders.list_images(pred_dir)
    if not paths:
        raise DataError(f"{pred_dir} has no images (.jpg .jpeg .png .bmp .webp); restore seg_pred from the Kaggle zip")

    def build(size, workers):
        x, keep, skipped = folders.decode_images(paths, size, workers, f"decoding {pred_dir.name}")
        folders.warn_skipped(skipped, pred_dir)
        names = [p.relative_to(pred_dir).as_posix() for p, k in zip(paths, keep) if k]
        return {"images": torch.from_numpy(x)}, {"paths": json.dumps(names)}

    source = Source(pred_dir, paths, f"{pred_dir} (image folder)", build)
    t, meta = _cached(data_dir / "cache" / f"intel-pred-{size}px.safetensors", source, size, cfg.num_workers)
    return t["images"], json.loads(meta["paths"])


def split_train_val(train: Split, fraction: float, seed: int) -> tuple:
    """(train, val or None): a class-stratified, seeded hold-out of `fraction` of the train split."""
    if fraction <= 0:
        return train, None
    n_val = max(1, int(round(fraction * len(train.labels))))
    val_idx = stratified_subset(train.labels, n_val, seed)
    keep = torch.ones(len(train.labels), dtype=torch.bool)
    keep[val_idx] = False
    return Split(train.images[keep], train.labels[keep]), Split(train.images[val_idx], train.labels[val_idx])


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of n samples, each class represented in proportion to its size.

    Quotas are floor(n * share) with the remainder going to the largest fractional parts,
    so the total is exactly n; which samples of a class are taken depends only on `seed`.
    """
    labels = labels.detach().cpu().long()
    total = labels.numel()
    if n >= total:
        return torch.arange(total, dtype=torch.int64)
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    extra = n - int(quota.sum())
    if extra > 0:
        quota[torch.argsort(exact - quota, descending=True, stable=True)[:extra]] += 1
    g = torch.Generator().manual_seed(int(seed))
    picks = []
    for c, cnt, q in zip(classes.tolist(), counts.tolist(), quota.tolist()):
        members = torch.nonzero(labels == c).squeeze(1)
        picks.append(members[torch.randperm(cnt, generator=g)[:q]])
    return torch.cat(picks).sort().values
