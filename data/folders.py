"""Source files -> uint8 arrays: folders of images (Intel Image Classification in the Kaggle
layout, any train/ + test/ class-folder tree), Fashion-MNIST idx files, CIFAR python batches.
Where to look and the tensor cache around this live in data/dataset.py.

Decoding is forgiving (grey, CMYK, RGBA, palette, a PNG named .jpg all become RGB); an
unreadable file is skipped and reported once; a layout problem is a DataError that names
the folder and says how to fix it.
"""
from __future__ import annotations

import gzip
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.errors import UserError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
INTEL_HOME = "https://www.kaggle.com/datasets/puneet6060/intel-image-classification"
INTEL_HOW = f"download Intel Image Classification ({INTEL_HOME}), unzip it there, or pass --data_dir=<folder>"


class DataError(UserError):
    """A data folder or file is missing, empty or malformed. The message names the path and the fix."""


# ----------------------------------------------------------------------------- listing

def is_image_file(name: str) -> bool:
    # hidden files are skipped too: macOS "._x.jpg" resource forks carry the extension but no image
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (other files are ignored by extension)."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.is_file() and is_image_file(e.name)]
    return [folder / n for n in sorted(names)]


def nested_images(folder: Path) -> list[Path]:
    """Image files in the sub-folders of `folder`, at any depth: a class folder's images are only those
    directly in it, so these are left out (and counted in a warning)."""
    found = []
    for sub in (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(sub):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in sorted(filenames) if is_image_file(f)]
    return found


def class_dirs(split_dir: Path) -> list[Path]:
    """Non-hidden sub-folders of a split folder, sorted: one per class."""
    with os.scandir(split_dir) as it:
        names = [e.name for e in it if e.is_dir() and not e.name.startswith(".")]
    return [split_dir / n for n in sorted(names)]


def scan_split(split_dir: Path, classes: tuple[str, ...] | None = None):
    """(paths, labels, classes) of a class-folder split. `classes` (from train) fixes the label order."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a folder; it should hold one sub-folder of images per class")
    dirs = class_dirs(split_dir)
    if not dirs:
        raise DataError(f"{split_dir} has no class sub-folders; put each class's images in {split_dir}/<class>/")
    found = tuple(d.name for d in dirs)
    if classes is None:
        classes = found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(f"{split_dir} has class folder(s) {unknown} that the train split lacks "
                        f"(train classes: {list(classes)}); rename or remove them")
    missing = [c for c in classes if c not in found]
    if missing:  # the test metrics then say nothing about these classes: say so
        print(f"warning: {split_dir} has no folder for class(es) {missing} that the train split has; its "
              f"accuracy and per-class report leave them out", file=sys.stderr, flush=True)
    paths, labels, ignored = [], [], []
    for d in dirs:
        files, nested = list_images(d), nested_images(d)
        if not files:
            inside = f"; its {len(nested)} image(s) in sub-folders do not count, move them up" if nested else ""
            raise DataError(f"class folder {d} has no images (.jpg .jpeg .png .bmp .webp){inside}; "
                            f"add images or remove the folder")
        paths += files
        labels += [classes.index(d.name)] * len(files)
        ignored += nested
    if ignored:
        print(f"warning: ignored {len(ignored)} image file(s) in sub-folders of the class folders of {split_dir} "
              f"(e.g. {ignored[0]}); only images directly in <class>/ are used: move them up to use them",
              file=sys.stderr, flush=True)
    return paths, labels, classes


# ----------------------------------------------------------------------------- decoding

DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what a bad image file raises


def rgb_square(im: Image.Image, size: int) -> np.ndarray:
    """An opened image -> uint8 [size, size, 3] RGB (it may raise DECODE_ERRORS while decoding)."""
    # JPEG only: let libjpeg decode at 1/2, 1/4, 1/8 scale when the photo is much larger
    im.draft("RGB", (size, size))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL wants palette transparency resolved before RGB
    if im.mode != "RGB":
        im = im.convert("RGB")
    if im.size != (size, size):
        # straight to a square, like transforms.Resize((150, 150)); PIL antialiases when shrinking
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def decode_image(path: Path, size: int) -> np.ndarray | None:
    """One file -> uint8 [size, size, 3] RGB, or None when the file cannot be decoded."""
    try:
        with Image.open(path) as im:
            return rgb_square(im, size)
    except DECODE_ERRORS:
        return None


def each_with_bar(n: int, work, workers: int, desc: str) -> None:
    """work(i) for i in 0..n-1, with a progress bar: in `workers` threads (PIL releases the GIL while decoding
    and resizing, so threads give real parallelism), or in order when workers is 0 (where the first exception
    in order is the one raised)."""
    with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
        if workers > 0:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, range(n)):
                    bar.update()
        else:
            for i in range(n):
                work(i)
                bar.update()


def decode_images(paths: list[Path], size: int, num_workers: int = 0, desc: str = "decoding"):
    """Decode many files into uint8 [N, 3, size, size] (NCHW, contiguous).

    Returns (images, keep, skipped): keep is a bool mask over `paths`, skipped the unreadable
    paths. PIL releases the GIL while decoding and resizing, so threads give real parallelism.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(paths), dtype=bool)

    def work(i):
        arr = decode_image(paths[i], size)
        if arr is not None:
            out[i] = arr
            keep[i] = True

    each_with_bar(len(paths), work, num_workers, desc)
    skipped = [p for p, k in zip(paths, keep) if not k]
    images = np.ascontiguousarray(out[keep].transpose(0, 3, 1, 2))
    return images, keep, skipped


def warn_skipped(skipped: list[Path], where: Path) -> None:
    """One warning line for all unreadable files of a load."""
    if skipped:
        first = ", ".join(str(p) for p in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        # a plain line, not warnings.warn: exactly one line, and never deduplicated away
        print(f"warning: skipped {len(skipped)} unreadable image file(s) under {where}: {first}{more}",
              file=sys.stderr, flush=True)


def decode_split(paths, labels, size, num_workers, desc):
    """Labelled split -> (uint8 NCHW images, int64 labels, skipped paths). Empty classes after skipping raise."""
    images, keep, skipped = decode_images(paths, size, num_workers, desc)
    labels = np.asarray(labels, dtype=np.int64)
    survivors = set(labels[keep].tolist())
    for label in sorted(set(labels.tolist()) - survivors):
        folder = paths[int(np.flatnonzero(labels == label)[0])].parent
        raise DataError(f"class folder {folder} has no readable images (all were corrupt); "
                        f"replace the files or remove the folder")
    return images, labels[keep], skipped


# ----------------------------------------------------------------------------- layouts

def _require_dir(data_dir: Path, how: str) -> None:
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; {how}")


def _nested(folder: Path) -> Path:
    # Kaggle's zip unpacks seg_train/seg_train/<class>/; accept seg_train/<class>/ as well
    inner = folder / folder.name
    return inner if inner.is_dir() else folder


def intel_root(data_dir: Path) -> Path:
    _require_dir(data_dir, INTEL_HOW)
    parent = data_dir / "intel-image-classification"
    root = parent if parent.is_dir() else data_dir
    if not (root / "seg_train").is_dir():
        raise DataError(f"{root} has no seg_train/ folder (expected {root}/seg_train/seg_train/<class>/*.jpg); "
                        f"{INTEL_HOW}")
    return root


def intel_splits(data_dir: Path) -> tuple[Path, Path, Path]:
    """(root, train_dir, test_dir) of an Intel Image Classification folder."""
    root = intel_root(data_dir)
    test = root / "seg_test"
    if not test.is_dir():
        raise DataError(f"{root} has no seg_test/ folder (expected {test}/seg_test/<class>/*.jpg); "
                        f"restore it from the Kaggle zip")
    return root, _nested(root / "seg_train"), _nested(test)


def intel_pred_dir(data_dir: Path) -> Path:
    root = intel_root(data_dir)
    pred = root / "seg_pred"
    if not pred.is_dir():
        raise DataError(f"{root} has no seg_pred/ folder (expected {pred}/seg_pred/*.jpg); "
                        f"restore it from the Kaggle zip")
    return _nested(pred)


def imagefolder_splits(data_dir: Path) -> tuple[Path, Path, Path]:
    """(root, train_dir, test_dir) of a folder with train/ and test/ (or val/) class sub-folders."""
    _require_dir(data_dir, "pass --data_dir=<folder with train/<class>/ and test/<class>/ images>")
    train = data_dir / "train"
    if not train.is_dir():
        raise DataError(f"{data_dir} has no train/ folder; --dataset=imagefolder expects "
                        f"{data_dir}/train/<class>/ and {data_dir}/test/<class>/ (or val/)")
    for name in ("test", "val"):
        if (data_dir / name).is_dir():
            return data_dir, train, data_dir / name
    raise DataError(f"{data_dir} has no test/ or val/ folder; add {data_dir}/test/<class>/ images "
                    f"(the same class names as train/)")


# ----------------------------------------------------------------------------- idx and cifar files

def read_idx(path: Path) -> np.ndarray:
    """An idx file (plain or .gz) of unsigned bytes -> numpy array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}); delete it and fetch the file again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes; delete it and fetch the file again")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    body = 4 + 4 * ndim
    if len(raw) != body + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or padded (header says {dims}); delete it and fetch the file again")
    return np.frombuffer(raw, dtype=np.uint8, offset=body).reshape(dims)


class _CifarUnpickler(pickle.Unpickler):
    """The CIFAR python batches are pickled dicts of numpy arrays: allow exactly that, nothing else."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):  # written by numpy 1.x, read by 2.x
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def unpickle_cifar(path: Path) -> dict:
    """One CIFAR python-version file (a pickled dict, bytes keys) through the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(d, dict):
            raise pickle.UnpicklingError("not a dict")
        return d
    except Exception as e:
        raise DataError(f"{path} is not a CIFAR python batch file ({e}); delete it and fetch it again") from e
