"""Data and teacher set-up for bench_train.py (never timed): the same images for both loops.

intel: a generated folder in the Kaggle layout (seg_train/seg_train/<class>/*.jpg, seg_test/...) of
real JPEG files, written by data/synthetic.py (as the tests' Intel folders are); the project decodes it
into its uint8 cache, the reference loop decodes it per item.
fashion-mnist: the real idx files; the project subsets them itself (max_train_samples, stratified,
seeded) and the very images data.load_dataset gives a run are written once as PNG files for the
reference loop, which then decodes one PNG per item per epoch, like an ImageFolder of photos.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from config import config_to_dict, make_config
from data.dataset import load_dataset
from data.sources import FASHION_CLASSES, find_fashion
from data.synthetic import INTEL_CLASSES, make_intel_folder, scene_image
from models.teacher_arch import build_teacher
from utils.atomic import atomic_write_json
from utils.checkpoint import load_weights_into, save_weights
from utils.run_files import BEST_WEIGHTS, CONFIG, write_summary


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


def make_intel_like(root: Path, n_train: int, n_test: int, size: int, num_classes: int = 6) -> BenchData:
    """Kaggle-layout JPEG folder: n_train / n_test images spread evenly over num_classes (<= 6) classes."""
    classes = INTEL_CLASSES[:num_classes]
    make_intel_folder(root, size=size, spread=(n_train, n_test), classes=num_classes, image=scene_image)
    return BenchData("intel", root, root / "seg_train" / "seg_train", root / "seg_test" / "seg_test", size,
                     "RGB", classes, n_train, n_test,
                     note=f"generated Intel-shaped JPEG folder ({len(classes)} classes, {size} px, quality 90)")


def make_fashion_pngs(root: Path, n_train: int, n_test: int, size: int, seed: int) -> BenchData:
    """The images a project run with max_train_samples=n_train, max_test_samples=n_test and this seed trains and
    tests on (data.load_dataset picks them), written as 28 px PNG files for the reference."""
    from benchmarks.reference_loop import write_png_tree

    data_dir = root / "fashion-data"
    files = find_fashion(data_dir)  # an empty data_dir: the system copy is found
    if files is None:
        raise SystemExit("Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist)")
    subset = load_dataset(make_config(dataset="fashion-mnist", data_dir=str(data_dir), max_train_samples=n_train,
                                      max_test_samples=n_test, seed=seed))
    for split, part in (("train", subset.train), ("test", subset.test)):
        write_png_tree(root / "png", split, part.images.numpy(), part.labels.numpy(), FASHION_CLASSES)
    shutil.rmtree(data_dir / "cache", ignore_errors=True)  # what load_dataset cached: the timed runs start cold
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
    save_weights(teacher, root / BEST_WEIGHTS, {"note": "random init for the speed benchmark"})
    atomic_write_json(root / CONFIG, config_to_dict(cfg))
    return root, teacher


def write_teacher_summary(run_dir: Path, acc: float) -> None:
    """summary.json with the teacher's measured accuracy: a sweep's teacher run has one, so the
    student run does not evaluate the teacher again."""
    write_summary(run_dir, {"status": "complete", "role": "teacher", "best_test_acc": acc,
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
    load_weights_into(teacher, run_dir / BEST_WEIGHTS, "the benchmark's seed12 teacher")
    return teacher
