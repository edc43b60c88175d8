"""Segmentation data from files, for --task=segment: Pascal VOC 2012 (`--dataset=voc`) and any folder of images with
their masks (`--dataset=segfolder`). Each is found here as a data/sources.Source (its files, whose fingerprint keys
the cache, and a `build(size, workers)`); data/dataset.load_masks caches it and carves the validation hold-out.

- A mask is a PNG whose pixel value is the class: a palette PNG's palette INDEX (VOC's SegmentationClass: its
  colours only picture the index) or a single-channel PNG's value (8-bit, 16-bit or 1-bit). 255 is a pixel without
  a label (VOC's void border), kept as scenes.IGNORE_INDEX in the uint8 cache and carried as -1 by batches
  (data/dataset.pixel_labels). A colour (RGB) picture of the classes is refused: its colours are not indices.
- An image is resized straight to size x size (bilinear, antialiased: as data/folders.decode_image) and
  converted to RGB; its mask to the same size with NEAREST, so every pixel keeps one of the mask's own values,
  never a blend of two classes.
- Bad input stops the load with one DataError line naming the file: an image without its mask, a mask without
  its image, a listed id without its files, a mask of another size than its image, a value that is no class and
  not 255, a file that cannot be decoded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data.folders import DECODE_ERRORS, DataError, each_with_bar, is_image_file, list_images, rgb_square
from data.scenes import IGNORE_INDEX
from data.sources import Source, labelled_tensors

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOC_HOW = ("download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and unpack it "
           "there, or pass --data_dir=<folder>")
# the modes PIL opens a class-index PNG in: palette, 8-bit grey, 1-bit, 16/32-bit integer grey
MASK_MODES = frozenset({"P", "L", "1", "I", "I;16", "I;16B", "I;16L"})
TEST_EVERY = 5  # a segfolder without train/ and test/: every 5th pair (sorted by name) is a test pair, 20 %
CLASSES_FILE = "classes.txt"


# ----------------------------------------------------------------------------- decoding

def read_mask(path: Path) -> np.ndarray:
    """A mask file -> its class values as uint8 [H, W] (255: no label), or a DataError naming the file."""
    try:
        with Image.open(path) as m:
            if m.mode not in MASK_MODES:
                raise DataError(f"{path}: mode {m.mode} is no mask; a mask is a single-channel or palette PNG whose "
                                f"pixel value is the class (a colour picture of the classes is not one)")
            values = np.asarray(m)
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode the mask {path} ({e}); replace it, or remove it and its image") from e
    if values.dtype != np.uint8:  # 1-bit (bool) or 16/32-bit integer masks
        if values.size and (int(values.min()) < 0 or int(values.max()) > IGNORE_INDEX):
            bad = int(values.max()) if int(values.max()) > IGNORE_INDEX else int(values.min())
            raise DataError(f"{path}: pixel value {bad} is no class and not {IGNORE_INDEX} (no label)")
        values = values.astype(np.uint8)
    return values


def decode_pair(image: Path, mask: Path, size: int, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [size, size, 3] RGB image, uint8 [size, size] mask) of one pair; every value of the mask a class
    below num_classes (None: any) or IGNORE_INDEX, and the mask the image's size, else one DataError line."""
    values = read_mask(mask)
    if num_classes is not None:
        counts = np.bincount(values.reshape(-1), minlength=256)
        counts[IGNORE_INDEX] = 0
        if counts[num_classes:].any():
            bad = num_classes + int(np.flatnonzero(counts[num_classes:])[0])
            raise DataError(f"{mask}: pixel value {bad} is no class (0..{num_classes - 1}) and not {IGNORE_INDEX} "
                            f"(no label)")
    try:
        with Image.open(image) as im:
            if im.size != values.shape[::-1]:
                raise DataError(f"{mask} is {values.shape[1]}x{values.shape[0]} px but its image {image} is "
                                f"{im.size[0]}x{im.size[1]}; a mask labels its image's pixels one for one")
            pixels = rgb_square(im, size)
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode the image {image} ({e}); replace it, or remove it and its mask") from e
    if values.shape != (size, size):
        values = np.asarray(Image.fromarray(values).resize((size, size), Image.NEAREST))
    return pixels, values


def decode_pairs(pairs: list, size: int, num_classes: int | None, workers: int, desc: str):
    """Pairs of (image, mask) paths -> (uint8 images [N, 3, size, size], uint8 masks [N, size, size]) tensors.
    PIL releases the GIL while decoding, so `workers` threads decode in parallel; the first bad pair in order
    raises."""
    images = np.empty((len(pairs), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(pairs), size, size), dtype=np.uint8)

    def work(i):
        images[i], masks[i] = decode_pair(*pairs[i], size, num_classes)

    each_with_bar(len(pairs), work, workers, desc)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(masks)


def mask_source(root: Path, splits: dict, classes, files: list, desc: str) -> Source:
    """The Source of train and test pairs ({"train": [(image, mask)], "test": [...]}). `classes`: the names,
    or None for 0..the largest value any mask holds (255 aside)."""

    def build(size, workers):
        known = None if classes is None else len(classes)
        tx, ty = decode_pairs(splits["train"], size, known, workers, "decoding train pairs")
        vx, vy = decode_pairs(splits["test"], size, known, workers, "decoding test pairs")
        names = classes
        if names is None:
            seen = torch.cat([ty.reshape(-1), vy.reshape(-1)])
            seen = seen[seen != IGNORE_INDEX]
            if len(seen) == 0:
                raise DataError(f"{root}: every mask pixel is {IGNORE_INDEX} (no label); nothing to learn from")
            names = tuple(str(c) for c in range(int(seen.max()) + 1))
            if len(names) < 2:  # e.g. 0/255 masks: 255 is "no label" here, so there is nothing to tell apart
                raise DataError(f"{root}: every labeled mask pixel is 0, one class; a mask's value is its class "
                                f"and {IGNORE_INDEX} means no label (0/255 masks: write the foreground as 1, or "
                                f"add a classes.txt)")
        tensors, meta = labelled_tensors(tx, ty, vx, vy, names)
        return tensors, {**meta, "canvas": json.dumps([size, size])}  # data/dataset.cache_defect: masks of size

    return Source(root, files, desc, build)


# ----------------------------------------------------------------------------- Pascal VOC 2012

def voc_root(data_dir: Path) -> Path:
    """The VOC2012 folder: data_dir/VOCdevkit/VOC2012 (the tar unpacked there), data_dir/VOC2012 or data_dir."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; {VOC_HOW}")
    for root in (data_dir / "VOCdevkit" / "VOC2012", data_dir / "VOC2012", data_dir):
        if (root / "SegmentationClass").is_dir():
            return root
    raise DataError(f"no Pascal VOC 2012 folder in {data_dir} (expected {data_dir}/VOCdevkit/VOC2012/ with "
                    f"JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/); {VOC_HOW}")


def read_ids(path: Path) -> list[str]:
    """The image ids of an ImageSets list, one a line, in order, each once."""
    if not path.is_file():
        raise DataError(f"{path} is missing (one image id a line); restore it from the VOC tar")
    ids = list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))
    if not ids:
        raise DataError(f"{path} lists no image ids; restore it from the VOC tar")
    return ids


def voc_source(data_dir: Path) -> Source:
    """Pascal VOC 2012's segmentation set: ImageSets/Segmentation/train.txt is the training split (val_fraction of
    it the hold-out, data/dataset.load_masks) and val.txt the test split. VOC's test masks were never published
    (its evaluation server scores them), so val.txt is the test set every paper reports. 21 classes
    (VOC_CLASSES, 0 background); 255, the void border round each object, is no label."""
    root = voc_root(data_dir)
    lists = root / "ImageSets" / "Segmentation"
    ids = {"train": read_ids(lists / "train.txt"), "test": read_ids(lists / "val.txt")}
    both = set(ids["train"]) & set(ids["test"])
    if both:
        raise DataError(f"{lists / 'val.txt'} and train.txt both list {sorted(both)[0]} ({len(both)} id(s) in "
                        f"both): a test image would be trained on; restore the lists from the VOC tar")
    splits = {}
    for split, listed in ids.items():
        name = "train.txt" if split == "train" else "val.txt"
        splits[split] = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in listed]
        for i, pair in zip(listed, splits[split]):
            for p in pair:
                if not p.is_file():
                    raise DataError(f"{p} is missing, though {lists / name} lists {i}; restore it from the VOC "
                                    f"tar or take the id out of {name}")
    files = [lists / "train.txt", lists / "val.txt", *(p for s in splits.values() for pair in s for p in pair)]
    return mask_source(root, splits, VOC_CLASSES, files, f"{root} (Pascal VOC 2012 segmentation)")


# ----------------------------------------------------------------------------- a folder of images and masks

def _has_pairs(folder: Path) -> bool:
    """Whether `folder` holds images/ and masks/; one of them alone is a DataError."""
    images, masks = (folder / "images").is_dir(), (folder / "masks").is_dir()
    if images != masks:
        have, lack = ("images", "masks") if images else ("masks", "images")
        raise DataError(f"{folder} has {have}/ but no {lack}/ beside it; --dataset=segfolder pairs "
                        f"images/<name>.png|jpg with masks/<name>.png")
    return images


def scan_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of every images/<name>.<ext> and masks/<name>.png of `folder`, sorted by name: each image must
    have its mask and each mask its image."""
    images, masks = {}, {}
    for p in list_images(folder / "images"):
        if p.stem in images:
            raise DataError(f"{p} and {images[p.stem].name} share the name {p.stem!r}; keep one (a mask pairs by name)")
        images[p.stem] = p
    with os.scandir(folder / "masks") as it:
        for e in sorted(it, key=lambda e: e.name):
            if e.is_file() and is_image_file(e.name) and e.name.lower().endswith(".png"):
                masks[Path(e.name).stem] = folder / "masks" / e.name
    for stem, p in images.items():
        if stem not in masks:
            raise DataError(f"{p} has no mask {folder / 'masks' / stem}.png; add it or remove the image")
    for stem, p in masks.items():
        if stem not in images:
            raise DataError(f"{p} has no image {folder / 'images' / stem}.png|.jpg; add it or remove the mask")
    if not images:
        raise DataError(f"{folder / 'images'} has no images (.jpg .jpeg .png .bmp .webp); add pairs of "
                        f"images/<name>.png|jpg and masks/<name>.png")
    return [(images[s], masks[s]) for s in sorted(images)]


def read_classes(path: Path) -> tuple[str, ...] | None:
    """The class names of classes.txt (one a line, line k class k; blank lines skipped), None without the file."""
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not 1 <= len(names) <= IGNORE_INDEX:
        raise DataError(f"{path} names {len(names)} classes; a mask holds 1 to {IGNORE_INDEX} (value "
                        f"{IGNORE_INDEX} is no label), one name a line")
    return names


def segfolder_source(data_dir: Path) -> Source:
    """A folder of images and masks. With train/ and test/ (or val/), each holding images/ and masks/, those are the
    splits; with images/ and masks/ alone, every TEST_EVERY-th pair in name order is the test split (spread over
    the names, and the same on every machine) and the rest the training split. The classes are the lines of
    data_dir/classes.txt when it exists (a mask value past them is an error), else 0..the largest value any
    mask holds, named by their numbers."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; pass --data_dir=<folder with images/ and masks/>")
    if (data_dir / "train").is_dir() and _has_pairs(data_dir / "train"):
        test = next((data_dir / n for n in ("test", "val") if (data_dir / n).is_dir() and _has_pairs(data_dir / n)),
                    None)
        if test is None:
            raise DataError(f"{data_dir} has train/images and train/masks but no test/ (or val/) holding images/ and "
                            f"masks/; add one, or put every pair in {data_dir}/images and {data_dir}/masks")
        splits = {"train": scan_pairs(data_dir / "train"), "test": scan_pairs(test)}
    elif _has_pairs(data_dir):
        pairs = scan_pairs(data_dir)
        if len(pairs) < TEST_EVERY:
            raise DataError(f"{data_dir} holds {len(pairs)} image/mask pair(s); every {TEST_EVERY}th is held out "
                            f"for test, so at least {TEST_EVERY} are needed (or give train/ and test/ folders)")
        splits = {"train": [p for i, p in enumerate(pairs) if i % TEST_EVERY != TEST_EVERY - 1],
                  "test": pairs[TEST_EVERY - 1::TEST_EVERY]}
    else:
        raise DataError(f"{data_dir} has no images/ and masks/ folders; --dataset=segfolder expects "
                        f"{data_dir}/images/<name>.png|jpg with {data_dir}/masks/<name>.png (or train/ and test/ "
                        f"each holding both)")
    classes = read_classes(data_dir / CLASSES_FILE)
    files = [p for s in splits.values() for pair in s for p in pair]
    files += [data_dir / CLASSES_FILE] if classes is not None else []
    return mask_source(data_dir, splits, classes, files, f"{data_dir} (segmentation folder)")
