"""Where each dataset's files are and how to decode them: Fashion-MNIST (Debian's package, a data_dir,
or torchvision's download), CIFAR-10/100 (the python pickles' folders) and image folders (Intel and
any ImageFolder tree). Each gives a `Source`: the files (whose fingerprint keys the cache) and a
`build(size, workers)` that decodes them into uint8 tensors and metadata. data/dataset.py caches them."""
from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from data import folders
from data.folders import DataError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
# Debian's dataset-fashion-mnist; $FASHION_MNIST_DIR first where set (a machine with its own copy, e.g. the GPU check's)
FASHION_SYSTEM_DIRS = (*([Path(os.environ["FASHION_MNIST_DIR"])] if os.environ.get("FASHION_MNIST_DIR") else []),
                       Path("/usr/share/datasets/fashion-mnist"))
DOWNLOAD_SOCKET_TIMEOUT_S = 15   # per connection attempt: offline machines fail fast
DOWNLOAD_DEADLINE_S = 300        # whole download, so a stalled mirror can never hang a run


@dataclass(frozen=True)
class Source:
    """Files found on disk, and how to decode them into tensors + metadata."""
    root: Path
    files: list[Path]
    desc: str
    build: Callable[[int, int], tuple[dict[str, torch.Tensor], dict[str, str]]]  # (size, workers)


def labelled_tensors(train_x, train_y, test_x, test_y, classes) -> tuple[dict, dict]:
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

def find_fashion(data_dir: Path) -> dict[str, Path] | None:
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


def fashion_source(data_dir: Path) -> Source:
    files = find_fashion(data_dir)
    if files is None:
        reason = _torchvision_download("FashionMNIST", data_dir)
        files = find_fashion(data_dir)
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
        return labelled_tensors(resize_uint8(arrays["train_images"].unsqueeze(1), size), arrays["train_labels"].long(),
                         resize_uint8(arrays["test_images"].unsqueeze(1), size), arrays["test_labels"].long(),
                         FASHION_CLASSES)

    return Source(root, list(files.values()), f"{root} ({kind})", build)


# ----------------------------------------------------------------------------- cifar

CIFAR = {  # name: (folder, torchvision class, train files, test files, meta file, label key, names key)
    "cifar10": ("cifar-10-batches-py", "CIFAR10", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", "CIFAR100", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def cifar_source(name: str, data_dir: Path) -> Source:
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
        return labelled_tensors(resize_uint8(tx, size), ty, resize_uint8(vx, size), vy, classes)

    return Source(root, [root / f for f in wanted], f"{root} (cifar python batches)", build)


# ----------------------------------------------------------------------------- folders

def folder_source(kind: str, data_dir: Path) -> Source:
    root, train_dir, test_dir = (folders.intel_splits if kind == "intel" else folders.imagefolder_splits)(data_dir)
    train_paths, train_labels, classes = folders.scan_split(train_dir)
    test_paths, test_labels, _ = folders.scan_split(test_dir, classes)

    def build(size, workers):
        tx, ty, skipped = folders.decode_split(train_paths, train_labels, size, workers, f"decoding {train_dir.name}")
        vx, vy, skipped2 = folders.decode_split(test_paths, test_labels, size, workers, f"decoding {test_dir.name}")
        folders.warn_skipped(skipped + skipped2, root)
        tx, ty, vx, vy = (torch.from_numpy(a) for a in (tx, ty, vx, vy))
        return labelled_tensors(tx, ty, vx, vy, classes)

    return Source(root, train_paths + test_paths, f"{root} (image folders)", build)
