"""Data and teacher set-up for bench_train.py (never timed): the same images for both loops.

intel: a generated folder in the Kaggle layout (seg_train/seg_train/<class>/*.jpg, seg_test/...) of
real JPEG files; the project decodes it into its uint8 cache, the reference loop decodes it per item.
fashion-mnist: the real idx files; the project subsets them itself (max_train_samples, stratified,
seeded) and the very same images are written once as PNG files for the reference loop, which then
decodes one PNG per item per epoch, like an ImageFolder of photos.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from config import config_to_dict, make_config
from data import folders
from data.dataset import stratified_subset
from data.sources import FASHION_CLASSES, find_fashion
from models.teacher_arch import build_teacher
from utils.atomic import atomic_write_json
from utils.checkpoint import load_weights_into, save_weights

INTEL_CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")


@dataclasses.dataclass
class BenchData:
    dataset: str            # the project's dataset name
    data_dir: Path          # the project's data_dir (its cache goes to data_dir/cache)
    train_root: Path        # ImageFolder roots of the reference loop
    test_root: Path
    size: int               # px
    mode: str               # PIL mode: RGB or L
    classes: tuple
    n_train: int
    n_test: int
    max_train: int = 0      # the project's max_train_samples / max_test_samples (0 = all files)
    max_test: int = 0
    note: str = ""

    @property
    def channels(self) -> int:
        return len(self.mode)


def scene_image(label: int, index: int, size: int, num_classes: int) -> np.ndarray:
    """uint8 [size, size, 3]: a class colour and stripe orientation/frequency under heavy noise, so a
    small CNN learns it in a few epochs but not at once."""
    rng = np.random.default_rng(7919 * label + index)
    hue = np.cos(2 * np.pi * (label / num_classes + np.array([0.0, 1 / 3, 2 / 3])))
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * label / num_classes + rng.normal(0, 0.15)
    freq = 3 + label % 3
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)[..., None]
    img = 128 + 45 * hue[None, None, :] + 45 * stripes + rng.normal(0, 45, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_intel_like(root: Path, n_train: int, n_test: int, size: int, num_classes: int = 6) -> BenchData:
    """Kaggle-layout JPEG folder: n_train / n_test images spread evenly over num_classes (<= 6) classes."""
    classes = INTEL_CLASSES[:num_classes]
    for split, n, offset in (("seg_train", n_train, 0), ("seg_test", n_test, 100_000)):
        for i in range(n):
            label = i % num_classes
            d = root / split / split / classes[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene_image(label, offset + i, size, num_classes)).save(
                d / f"{offset + i}.jpg", format="JPEG", quality=90)
    return BenchData("intel", root, root / "seg_train" / "seg_train", root / "seg_test" / "seg_test", size,
                     "RGB", classes, n_train, n_test,
                     note=f"generated Intel-shaped JPEG folder ({len(classes)} classes, {size} px, quality 90)")


def make_fashion_pngs(root: Path, n_train: int, n_test: int, size: int, seed: int) -> BenchData:
    """The project's stratified subset of the real Fashion-MNIST, written as PNG files for the reference."""
    from benchmarks.reference_loop import write_png_tree

    files = find_fashion(root / "fashion-data")  # an empty data_dir: the system copy is found
    if files is None:
        raise SystemExit("Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist)")
    for split, n in (("train", n_train), ("test", n_test)):
        x = folders.read_idx(files[f"{split}_images"])
        y = folders.read_idx(files[f"{split}_labels"]).astype(np.int64)
        idx = stratified_subset(torch.from_numpy(y), n, seed).numpy()  # what max_*_samples picks
        write_png_tree(root / "png", split, x[idx], y[idx], FASHION_CLASSES)
    return BenchData("fashion-mnist", root / "fashion-data", root / "png" / "train", root / "png" / "test", size,
                     "L", FASHION_CLASSES, n_train, n_test, max_train=n_train, max_test=n_test,
                     note=f"real Fashion-MNIST ({files['train_images'].parent}); the stratified subset max_*_samples picks, "
                          f"written once (untimed) as 28 px PNG files that the reference decodes (and resizes to "
                          f"{size} px) per item per epoch")


def prepare_data(name: str, root: Path, n_train: int, n_test: int, size: int, classes: int, seed: int) -> BenchData:
    root.mkdir(parents=True, exist_ok=True)
    if name == "intel":
        return make_intel_like(root, n_train, n_test, size, classes)
    return make_fashion_pngs(root, n_train, n_test, size, seed)


def make_teacher_run(root: Path, data: BenchData, teacher_width: int, seed: int) -> tuple:
    """A seed12 teacher run dir (config.json, best_model.safetensors) with its random init: its accuracy
    does not matter for speed. Returns (run dir, teacher model)."""
    cfg = make_config(role="teacher", dataset=data.dataset, teacher_arch="seed12", teacher_width=teacher_width,
                      image_size=data.size, run_name="bench_teacher", seed=seed)  # students check the size
    torch.manual_seed(seed + 1000)
    teacher = build_teacher(cfg, data.channels, len(data.classes))
    root.mkdir(parents=True, exist_ok=True)
    save_weights(teacher, root / "best_model.safetensors", {"note": "random init for the speed benchmark"})
    atomic_write_json(root / "config.json", config_to_dict(cfg))
    return root, teacher


def write_teacher_summary(run_dir: Path, acc: float) -> None:
    """summary.json with the teacher's measured accuracy: a sweep's teacher run has one, so the
    student run does not evaluate the teacher again."""
    atomic_write_json(run_dir / "summary.json", {"status": "complete", "role": "teacher", "best_test_acc": acc,
                                                 "note": "random init: the speed benchmark's teacher"})


def fresh_copy(src: Path, dst: Path) -> Path:
    """A fresh copy of a run dir (so the teacher-logit cache beside the weights starts cold)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def clear_cache(data: BenchData) -> None:
    """Delete the project's tensor cache: the next project run decodes the dataset again (cold)."""
    shutil.rmtree(data.data_dir / "cache", ignore_errors=True)
    os.makedirs(data.data_dir, exist_ok=True)


def load_teacher(run_dir: Path, data: BenchData, teacher_width: int):
    """The same teacher weights as a plain seed12 module (NCHW, as the original ran it)."""
    cfg = make_config(role="teacher", teacher_arch="seed12", teacher_width=teacher_width)
    teacher = build_teacher(cfg, data.channels, len(data.classes))
    load_weights_into(teacher, run_dir / "best_model.safetensors", "the benchmark's seed12 teacher")
    return teacher
