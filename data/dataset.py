"""Datasets -> uint8 tensor cache -> tensors on any device.

Each dataset is decoded once into uint8 [N, C, H, W] tensors saved as
<data_dir>/cache/<dataset>-<size>px.safetensors (no pickle: the class names, the
source fingerprint and the train mean/std live in the safetensors metadata).
The cache is rebuilt when a source file's path, size or mtime changes; the image
size is part of the file name. Batches are normalized and augmented as tensors
(data/transforms.py), so the same code runs on CPU and GPU.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from data import folders
from data.folders import DataError
from utils.atomic import atomic_write_to

__all__ = ["DataError", "Split", "Dataset", "load_dataset", "load_pred_images", "split_train_val",
           "stratified_subset"]

NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "intel": 150, "imagefolder": 64}
CACHE_FORMAT = "kd-uint8-cache-1"  # bump when the cache layout changes: old files are rebuilt
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
FASHION_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)  # Debian: dataset-fashion-mnist
DOWNLOAD_SOCKET_TIMEOUT_S = 15   # per connection attempt: offline machines fail fast
DOWNLOAD_DEADLINE_S = 300        # whole download, so a stalled mirror can never hang a run


@dataclass(frozen=True)
class Split:
    """One split: uint8 images [N, C, H, W] and int64 labels [N], on the CPU or on the training device."""

    images: torch.Tensor  # uint8 [N, C, H, W], contiguous
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


VAL_SEED = 12345  # the validation hold-out is the same images for every run of a dataset, teacher included


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split  # the training images of this run (max_train_samples of what val leaves)
    test: Split
    val: Optional[Split]  # val_fraction of the whole train split, never trained on; None when val_fraction=0
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, train images scaled to [0, 1], whole train cache
    std: tuple[float, ...]
    source: str              # where the files were found, for summaries

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Source:
    """Files found on disk, and how to decode them into tensors + metadata."""
    root: Path
    files: list[Path]
    desc: str
    build: Callable[[int, int], tuple[dict[str, torch.Tensor], dict[str, str]]]  # (size, workers)


# ----------------------------------------------------------------------------- cache

def fingerprint(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _read_cache(path: Path, want: dict[str, str]):
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if any(meta.get(k) != v for k, v in want.items()):
            return None
        return load_file(str(path)), meta
    except Exception:  # truncated or foreign file: decode again and overwrite it
        return None


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    try:
        atomic_write_to(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                                    metadata=meta))
    except OSError as e:  # read-only data dir: the run works, only the next one is slow again
        print(f"warning: could not write the data cache {path} ({e}); it will be decoded again next time",
              file=sys.stderr)


def _cached(cache_file: Path, source: _Source, size: int, workers: int):
    want = {"format": CACHE_FORMAT, "fingerprint": fingerprint(source.root, source.files),
            "image_size": str(size)}
    hit = _read_cache(cache_file, want)
    if hit is not None:
        return hit
    tensors, meta = source.build(size, workers)
    meta = {**meta, **want, "source": source.desc}
    _write_cache(cache_file, tensors, meta)
    return tensors, meta


def _labelled(train_x, train_y, test_x, test_y, classes) -> tuple[dict, dict]:
    """Tensors + metadata of a labelled dataset; mean/std are computed here, once per cache."""
    # exact, from a 256-bin histogram per channel: no float copy of the whole split
    values = torch.arange(256, dtype=torch.float64)
    hist = torch.stack([torch.bincount(train_x[:, ch].reshape(-1), minlength=256).double()
                        for ch in range(train_x.shape[1])])
    n = hist.sum(1)
    mean = (hist * values).sum(1) / n
    std = ((hist * values ** 2).sum(1) / n - mean ** 2).clamp_min(0).sqrt()
    tensors = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    meta = {"classes": json.dumps(list(classes)),
            "mean": json.dumps((mean / 255).tolist()), "std": json.dumps((std / 255).tolist())}
    return tensors, meta


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW -> uint8 N x C x size x size, bilinear with antialias (torch's uint8 kernel:
    several times faster than going through float, and within 1 level of it)."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):
        out[i:i + 4096] = F.interpolate(x[i:i + 4096], size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    return out


# ----------------------------------------------------------------------------- downloads

def _torchvision_download(cls_name: str, data_dir: Path) -> str | None:
    """Try torchvision's downloader; returns None on success, else a short reason."""
    result: dict[str, BaseException] = {}

    def go():
        try:
            import torchvision.datasets as tvd
            getattr(tvd, cls_name)(root=str(data_dir), train=True, download=True)
        except BaseException as e:  # noqa: BLE001 - reported as the reason below
            result["error"] = e

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        t = threading.Thread(target=go, daemon=True)
        t.start()
        t.join(DOWNLOAD_DEADLINE_S)
    except OSError as e:
        return str(e)
    finally:
        socket.setdefaulttimeout(old)
    if t.is_alive():
        return f"no answer within {DOWNLOAD_DEADLINE_S} s"
    err = result.get("error")
    return None if err is None else (str(err).splitlines() or [type(err).__name__])[0]


# ----------------------------------------------------------------------------- fashion-mnist

def _find_fashion(data_dir: Path) -> dict[str, Path] | None:
    dirs = [data_dir, data_dir / "fashion-mnist", data_dir / "FashionMNIST" / "raw", *FASHION_SYSTEM_DIRS]
    for d in dirs:
        found = {}
        for role, name in FASHION_FILES.items():
            for cand in (d / name, d / f"{name}.gz"):
                if cand.is_file():
                    found[role] = cand
                    break
        if len(found) == len(FASHION_FILES):
            return found
    return None


def _fashion_source(data_dir: Path) -> _Source:
    files = _find_fashion(data_dir)
    if files is None:
        reason = _torchvision_download("FashionMNIST", data_dir)
        files = _find_fashion(data_dir)
        if files is None:
            raise DataError(
                f"Fashion-MNIST idx files not found in {data_dir}, {data_dir}/fashion-mnist, "
                f"{data_dir}/FashionMNIST/raw or {FASHION_SYSTEM_DIRS[0]}, and the torchvision download failed "
                f"({reason}); install them with `sudo apt-get install dataset-fashion-mnist` or run once online")
    root = files["train_images"].parent
    kind = "idx.gz" if files["train_images"].suffix == ".gz" else "idx"

    def build(size, workers):
        arrays = {role: torch.from_numpy(folders.read_idx(p).copy()) for role, p in files.items()}
        for split in ("train", "test"):
            x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(f"{files[f'{split}_images']} and its labels file do not match "
                                f"({tuple(x.shape)} vs {tuple(y.shape)}); fetch both again")
        return _labelled(resize_uint8(arrays["train_images"].unsqueeze(1), size), arrays["train_labels"].long(),
                         resize_uint8(arrays["test_images"].unsqueeze(1), size), arrays["test_labels"].long(),
                         FASHION_CLASSES)

    return _Source(root, list(files.values()), f"{root} ({kind})", build)


# ----------------------------------------------------------------------------- cifar

CIFAR = {  # name: (folder, torchvision class, train files, test files, meta file, label key, names key)
    "cifar10": ("cifar-10-batches-py", "CIFAR10", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", "CIFAR100", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def _cifar_source(name: str, data_dir: Path) -> _Source:
    folder, tv_cls, train_files, test_files, meta_file, label_key, names_key = CIFAR[name]
    wanted = [*train_files, *test_files, meta_file]

    def find():
        for d in (data_dir / folder, data_dir):
            if all((d / f).is_file() for f in wanted):
                return d
        return None

    root = find()
    if root is None:
        reason = _torchvision_download(tv_cls, data_dir)
        root = find()
        if root is None:
            raise DataError(f"{name} batch files not found in {data_dir / folder} and the torchvision download "
                            f"failed ({reason}); run once online, or unpack the python-version archive "
                            f"from https://www.cs.toronto.edu/~kriz/cifar.html into {data_dir}")

    def read(files):
        xs, ys = [], []
        for f in files:
            d = folders.unpickle_cifar(root / f)
            if b"data" not in d or label_key not in d:
                raise DataError(f"{root / f} lacks the data/labels entries; delete it and fetch it again")
            xs.append(torch.from_numpy(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy()))
            ys.append(torch.as_tensor(list(d[label_key]), dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys)

    def build(size, workers):
        names = folders.unpickle_cifar(root / meta_file)[names_key]
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        (tx, ty), (vx, vy) = read(train_files), read(test_files)
        return _labelled(resize_uint8(tx, size), ty, resize_uint8(vx, size), vy, classes)

    return _Source(root, [root / f for f in wanted], f"{root} (cifar python batches)", build)


# ----------------------------------------------------------------------------- folders

def _folder_source(kind: str, data_dir: Path) -> _Source:
    root, train_dir, test_dir = (folders.intel_splits if kind == "intel" else folders.imagefolder_splits)(data_dir)
    train_paths, train_labels, classes = folders.scan_split(train_dir)
    test_paths, test_labels, _ = folders.scan_split(test_dir, classes)

    def build(size, workers):
        tx, ty, skipped = folders.decode_split(train_paths, train_labels, size, workers, f"decoding {train_dir.name}")
        vx, vy, skipped2 = folders.decode_split(test_paths, test_labels, size, workers, f"decoding {test_dir.name}")
        folders.warn_skipped(skipped + skipped2, root)
        tx, ty, vx, vy = (torch.from_numpy(a) for a in (tx, ty, vx, vy))
        return _labelled(tx, ty, vx, vy, classes)

    return _Source(root, train_paths + test_paths, f"{root} (image folders)", build)


# ----------------------------------------------------------------------------- public API

def _image_size(cfg) -> int:
    if cfg.dataset not in NATIVE_SIZE:
        raise DataError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(NATIVE_SIZE)}")
    size = int(cfg.image_size) or NATIVE_SIZE[cfg.dataset]
    if size < 0:
        raise DataError(f"image_size must be >= 0 (0 = the dataset's native size), got {cfg.image_size}")
    return size


def _subset(split: Split, n: int, seed: int) -> Split:
    if n <= 0 or n >= len(split):
        return split
    idx = stratified_subset(split.labels, n, seed)
    return Split(split.images.index_select(0, idx), split.labels.index_select(0, idx))


def load_dataset(cfg) -> Dataset:
    """Train/val/test uint8 tensors of cfg.dataset, from the cache (decoded and saved the first time).
    The validation hold-out is carved from the whole train split first, with a fixed seed, so it is the
    same for every run (a teacher never trains on a student's validation images); the run's training
    subset (max_train_samples, seeded by cfg.seed) comes from what is left."""
    size = _image_size(cfg)
    data_dir = Path(cfg.data_dir).expanduser()
    name = cfg.dataset
    if name == "fashion-mnist":
        source = _fashion_source(data_dir)
    elif name in CIFAR:
        source = _cifar_source(name, data_dir)
    else:
        source = _folder_source(name, data_dir)
    t, meta = _cached(data_dir / "cache" / f"{name}-{size}px.safetensors", source, size, cfg.num_workers)
    train, val = split_train_val(Split(t["train_images"], t["train_labels"]), cfg.val_fraction, VAL_SEED)
    return Dataset(
        name=name,
        train=_subset(train, cfg.max_train_samples, cfg.seed),
        test=_subset(Split(t["test_images"], t["test_labels"]), cfg.max_test_samples, cfg.seed),
        val=val,
        classes=tuple(json.loads(meta["classes"])),
        mean=tuple(json.loads(meta["mean"])),
        std=tuple(json.loads(meta["std"])),
        source=meta["source"],
    )


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

    source = _Source(pred_dir, paths, f"{pred_dir} (image folder)", build)
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
