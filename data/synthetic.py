"""Synthetic datasets in their real on-disk formats, torch-free (numpy and PIL): Kaggle-layout Intel JPEG
folders, class-folder trees, Fashion-MNIST idx files and CIFAR python batches. The tests read them as a
user's files; the speed benchmarks (benchmarks/bench_data.py) time the project on Intel-shaped folders."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

INTEL_CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")
# what make_intel_folder(odd=True) adds to seg_train: decodable extras, and the one corrupt file
ODD_VALID = 7
ODD_CORRUPT = "forest/broken.jpg"  # relative to the train split folder


def intel_test_per_class(per_class: int) -> int:
    """How many images per class make_intel_folder writes to seg_test."""
    return max(1, per_class // 2)


def class_image(label: int, index: int, size: int | tuple[int, int], num_classes: int = 6) -> np.ndarray:
    """uint8 HxWx3 image with a per-class colour and stripe direction/frequency, plus noise,
    so that a small model can learn the classes a little."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(1000 * label + index)
    hue = np.array([np.cos(2 * np.pi * label / num_classes), np.cos(2 * np.pi * (label / num_classes + 1 / 3)),
                    np.cos(2 * np.pi * (label / num_classes + 2 / 3))])
    base = 128 + 90 * hue
    yy, xx = np.mgrid[0:h, 0:w]
    freq = 2 + label % 4
    coord = xx if label % 2 == 0 else yy
    stripes = 40 * np.sin(2 * np.pi * freq * coord / max(w, h))[..., None]
    img = base[None, None, :] + stripes + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def scene_image(label: int, index: int, size: int, num_classes: int = 6) -> np.ndarray:
    """uint8 [size, size, 3] for the speed benchmarks: a class colour and stripe orientation/frequency under
    heavy noise, so a small CNN learns it in a few epochs but not at once."""
    rng = np.random.default_rng(7919 * label + index)
    hue = np.cos(2 * np.pi * (label / num_classes + np.array([0.0, 1 / 3, 2 / 3])))
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * label / num_classes + rng.normal(0, 0.15)
    freq = 3 + label % 3
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)[..., None]
    img = 128 + 45 * hue[None, None, :] + 45 * stripes + rng.normal(0, 45, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    im.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def make_intel_folder(root: Path, per_class: int = 4, size: int = 150, nested: bool = True,
                      odd: bool = False, pred: int = 0, *, spread: tuple[int, int] | None = None,
                      classes: int = 6, image=class_image) -> Path:
    """Write Intel Image Classification as Kaggle unpacks it (seg_train/seg_train/<class>/*.jpg,
    seg_test/seg_test/..., seg_pred/seg_pred/*.jpg; nested=False drops the inner folder) and
    return the data_dir. seg_test gets intel_test_per_class(per_class) images per class.

    spread=(n_train, n_test) writes that many images in all instead, image i of a split in class
    i % classes, named by its number (seg_test's from 100000), as the speed benchmarks want them;
    classes < 6 keeps the first INTEL_CLASSES; image(label, index, size, classes) draws each picture
    (class_image, or scene_image for the benchmarks).

    odd=True adds to the train split ODD_VALID decodable odd files (150x113 and 200x150 images,
    a grayscale JPEG, a CMYK JPEG, a PNG named .jpg, an RGBA PNG, a palette PNG), the corrupt
    file ODD_CORRUPT, and ignorable non-images (notes.txt, .DS_Store)."""
    root = Path(root)

    def split_dir(split: str) -> Path:
        return root / split / split if nested else root / split

    names = INTEL_CLASSES[:classes]
    if spread:
        for split, n, offset in (("seg_train", spread[0], 0), ("seg_test", spread[1], 100_000)):
            for i in range(n):
                _save(split_dir(split) / names[i % classes] / f"{offset + i}.jpg",
                      image(i % classes, offset + i, size, classes))
    else:
        for split, count in (("seg_train", per_class), ("seg_test", intel_test_per_class(per_class))):
            for label, cls in enumerate(names):
                for i in range(count):
                    # Kaggle file names are numbers; keep them unique across the dataset
                    _save(split_dir(split) / cls / f"{label * 1000 + i + (0 if split == 'seg_train' else 500)}.jpg",
                          image(label, i if split == "seg_train" else 100 + i, size, classes))
    if pred:
        for i in range(pred):
            _save(split_dir("seg_pred") / f"{20000 + i}.jpg", class_image(i % 6, 200 + i, size))
    if odd:
        train = split_dir("seg_train")
        _save(train / "buildings" / "odd_150x113.jpg", class_image(0, 900, (150, 113)))
        _save(train / "mountain" / "odd_200x150.jpg", class_image(3, 901, (200, 150)))
        _save(train / "glacier" / "gray.jpg", class_image(2, 902, size), mode="L")
        _save(train / "sea" / "cmyk.jpg", class_image(4, 903, size), mode="CMYK")
        _save(train / "street" / "png_named.jpg", class_image(5, 904, size), fmt="PNG")
        _save(train / "forest" / "rgba.png", class_image(1, 905, size), fmt="PNG", mode="RGBA")
        _save(train / "buildings" / "palette.png", class_image(0, 906, size), fmt="PNG", mode="P")
        (train / ODD_CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg " * 20)
        (train / "forest" / "notes.txt").write_text("photographer's notes, not an image\n")
        (train / "sea" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def make_imagefolder(root: Path, classes=("cat", "dog", "bird"), per_class: int = 3, size: int = 40,
                     test_name: str = "test") -> Path:
    """train/<class>/ and <test_name>/<class>/ of JPEGs (test_name "val" is accepted too)."""
    root = Path(root)
    for split in ("train", test_name):
        for label, cls in enumerate(classes):
            for i in range(per_class):
                _save(root / split / cls / f"img{i}.jpg", class_image(label, i, size, len(classes)))
    return root


# ----------------------------------------------------------------------------- idx / cifar

def fashion_pattern(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic uint8 [n, 28, 28] images and labels: pixel (k, r, c) = (7(k+offset) + 28r + c) % 256."""
    k = np.arange(offset, offset + n)[:, None, None]
    r = np.arange(28)[None, :, None]
    c = np.arange(28)[None, None, :]
    images = ((7 * k + 28 * r + c) % 256).astype(np.uint8)
    labels = (np.arange(offset, offset + n) % 10).astype(np.uint8)
    return images, labels


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    """An idx file: zero, zero, 0x08 (unsigned byte), ndim, big-endian int32 dims, then the bytes."""
    body = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def make_fashion_mnist_idx(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> Path:
    """The four Fashion-MNIST files with fashion_pattern() content (test images start at offset n_train)."""
    root = Path(root)
    tx, ty = fashion_pattern(n_train)
    vx, vy = fashion_pattern(n_test, offset=n_train)
    write_idx(root / "train-images-idx3-ubyte", tx, gz)
    write_idx(root / "train-labels-idx1-ubyte", ty, gz)
    write_idx(root / "t10k-images-idx3-ubyte", vx, gz)
    write_idx(root / "t10k-labels-idx1-ubyte", vy, gz)
    return root


def cifar_pattern(n: int, num_classes: int, offset: int = 0) -> tuple[np.ndarray, list[int]]:
    """uint8 [n, 3072] rows (R plane, G plane, B plane of 32x32) and labels."""
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(offset + i) % num_classes for i in range(n)]


def make_cifar(root: Path, kind: str = "cifar10", per_batch: int = 10, n_test: int = 10) -> Path:
    """CIFAR python-version files as the official archive unpacks them (pickled dicts, bytes keys)."""
    root = Path(root)

    def dump(path: Path, obj) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        for b in range(1, 6):
            data, labels = cifar_pattern(per_batch, 10, offset=(b - 1) * per_batch)
            dump(folder / f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(),
                                              b"labels": labels, b"data": data,
                                              b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]})
        data, labels = cifar_pattern(n_test, 10, offset=10_000)
        dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data})
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    else:
        folder = root / "cifar-100-python"
        for split, n, off in (("train", 5 * per_batch, 0), ("test", n_test, 10_000)):
            data, labels = cifar_pattern(n, 100, offset=off)
            dump(folder / split, {b"batch_label": split.encode(), b"fine_labels": labels,
                                  b"coarse_labels": [x % 20 for x in labels], b"data": data})
        dump(folder / "meta", {b"fine_label_names": [f"class{i:02d}".encode() for i in range(100)],
                               b"coarse_label_names": [f"super{i:02d}".encode() for i in range(20)]})
    return root
