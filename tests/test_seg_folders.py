"""Segmentation data from files (data/seg_folders.py): Pascal VOC 2012's layout and a folder of images and masks,
on tiny fixtures written here with PIL (20x24 images, palette or grey PNG masks). They load with their classes and
ignore pixels, masks are resized with NEAREST (never a blend of two classes), the cache is keyed by the files,
each bad input is one line naming its file, --task=classify refuses them, and a tiny VOC run trains end to end."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import train
from config import make_config
from data.dataset import load_dataset, pixel_labels
from data.folders import DataError
from data.seg_folders import VOC_CLASSES
from tests.fixtures import one_line_exit, small_run_args

H, W = 20, 24  # the fixtures' photos, height x width
OBJECT = (slice(4, 16), slice(5, 19))  # each mask's object rectangle, ringed by one pixel of 255 (VOC's void)


def voc_palette() -> list:
    """VOC's colour map (index k -> the colour its PNGs show): the colours are not the indices."""
    palette = []
    for k in range(256):
        r = g = b = 0
        for j in range(8):
            r |= ((k >> (3 * j)) & 1) << (7 - j)
            g |= ((k >> (3 * j + 1)) & 1) << (7 - j)
            b |= ((k >> (3 * j + 2)) & 1) << (7 - j)
        palette += [r, g, b]
    return palette


def mask_of(cls: int, h: int = H, w: int = W) -> np.ndarray:
    """Background with one object of class `cls`, its outline 255 (no label)."""
    m = np.zeros((h, w), np.uint8)
    rows, cols = OBJECT
    m[rows.start - 1:rows.stop + 1, cols.start - 1:cols.stop + 1] = 255
    m[rows, cols] = cls
    return m


def photo_of(mask: np.ndarray) -> np.ndarray:
    """An RGB picture of a mask: each class its own colour, plus a little noise."""
    rng = np.random.default_rng(int(mask.sum()))
    colours = np.array(voc_palette(), np.float64).reshape(256, 3)
    return np.clip(colours[mask] * 0.8 + rng.normal(0, 8, (*mask.shape, 3)), 0, 255).astype(np.uint8)


def save_mask(path, mask: np.ndarray, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask)
    if palette:
        im.putpalette(voc_palette())  # a palette PNG, as VOC's SegmentationClass
    im.save(path)


def make_voc(root, train_classes=(15, 12, 8, 3, 15, 7), val_classes=(12, 20)):
    """data_dir/VOCdevkit/VOC2012 as the VOC tar unpacks: JPEGs, palette masks and the two id lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, classes in (("train", train_classes), ("val", val_classes)):
        ids = [f"2007_{split}{i:02d}" for i in range(len(classes))]
        for i, cls in zip(ids, classes):
            (voc / "JPEGImages").mkdir(exist_ok=True)
            Image.fromarray(photo_of(mask_of(cls))).save(voc / "JPEGImages" / f"{i}.jpg", quality=95)
            save_mask(voc / "SegmentationClass" / f"{i}.png", mask_of(cls))
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def make_segfolder(root, classes=(1, 2, 3, 1, 2, 3), split=False):
    """images/<name>.png and masks/<name>.png (grey masks), or train/ and test/ each holding both."""
    for k, cls in enumerate(classes):
        where = root / ("test" if k % 3 == 2 else "train") if split else root
        (where / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_of(mask_of(cls))).save(where / "images" / f"img{k}.png")
        save_mask(where / "masks" / f"img{k}.png", mask_of(cls), palette=False)
    return root


def seg_cfg(data_dir, dataset="voc", *flags):
    return make_config(small_run_args(data_dir, data_dir / "runs", "--task=segment", f"--dataset={dataset}",
                                      "--method=ce", "--image_size=16", "--val_fraction=0.25", *flags))


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(tmp_path_factory.mktemp("voc"))


def test_voc_loads_its_classes_splits_and_ignore_pixels(voc):
    ds = load_dataset(seg_cfg(voc, "voc", "--image_size=24"))
    assert ds.classes == VOC_CLASSES and ds.num_classes == 21 and ds.in_channels == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 2, 2)  # train.txt less 25 %; val.txt is the test
    assert tuple(ds.train.images.shape) == (4, 3, 24, 24) and ds.train.images.dtype == torch.uint8
    assert tuple(ds.test.labels.shape) == (2, 24, 24) and ds.test.labels.dtype == torch.uint8
    for split in (ds.train, ds.val, ds.test):
        assert set(split.labels.unique().tolist()) <= set(range(21)) | {255}
    test = ds.test.labels  # val.txt's objects: 12 and 20, read as palette indices, not colours
    assert [int(m[12, 12]) for m in test] == [12, 20] and (test[:, 0, 0] == 0).all() and (test == 255).any()
    assert ((pixel_labels(test) == -1) == (test == 255)).all()  # batches carry no label as -1
    again = load_dataset(seg_cfg(voc, "voc", "--image_size=24"))  # from data_dir/cache
    assert (voc / "cache" / "voc-24px.safetensors").is_file() and torch.equal(again.test.labels, test)


def test_masks_are_resized_nearest_keeping_their_values(tmp_path):
    rng = np.random.default_rng(0)
    values = np.array([0, 3, 7, 20, 255], np.uint8)
    for k in range(5):  # each mask a random field of five values: any blend would make a sixth
        m = values[rng.integers(0, 5, (H, W))]
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(photo_of(m)).save(tmp_path / "images" / f"{k}.png")
        save_mask(tmp_path / "masks" / f"{k}.png", m)
    (tmp_path / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    for size in (13, 40):  # down and up
        ds = load_dataset(seg_cfg(tmp_path, "segfolder", f"--image_size={size}", "--val_fraction=0"))
        masks = torch.cat([ds.train.labels, ds.test.labels])
        assert tuple(masks.shape) == (5, size, size) and set(masks.unique().tolist()) == set(values.tolist())
        assert ds.classes == VOC_CLASSES


def test_segfolder_classes_from_the_masks_or_classes_txt_and_its_two_layouts(tmp_path):
    flat = make_segfolder(tmp_path / "flat")
    ds = load_dataset(seg_cfg(flat, "segfolder", "--val_fraction=0"))
    assert ds.classes == ("0", "1", "2", "3") and (len(ds.train), len(ds.test)) == (5, 1)  # every 5th is test
    assert int(ds.test.labels[0, 8, 8]) == 2 and (ds.test.labels == 255).any()  # img4's class 2, read as the grey
    (flat / "classes.txt").write_text("sky\nroad\ncar\nbike\ntree\n")
    assert load_dataset(seg_cfg(flat, "segfolder", "--val_fraction=0")).classes == ("sky", "road", "car", "bike",
                                                                                      "tree")
    split = make_segfolder(tmp_path / "split", split=True)
    ds = load_dataset(seg_cfg(split, "segfolder", "--val_fraction=0"))
    assert (len(ds.train), len(ds.test)) == (4, 2) and [int(m[8, 8]) for m in ds.test.labels] == [3, 3]


def test_a_folder_of_0_255_masks_is_one_class_and_refused(tmp_path):
    from data.folders import DataError
    root = make_segfolder(tmp_path / "binary", classes=(255,) * 6)  # foreground written as 255: "no label"
    with pytest.raises(DataError, match="one class; a mask's value is its class and 255 means no label"):
        load_dataset(seg_cfg(root, "segfolder", "--val_fraction=0"))


def broken(voc_src, tmp_path, spoil):
    """A copy of the VOC fixture spoiled by spoil(VOC2012 folder)."""
    import shutil
    root = tmp_path / "voc"
    shutil.copytree(voc_src, root, ignore=shutil.ignore_patterns("cache"))
    spoil(root / "VOCdevkit" / "VOC2012")
    return root


def _unlink(p):
    p.unlink()
    return p


@pytest.mark.parametrize("spoil, names, says", [
    (lambda v: _unlink(v / "JPEGImages" / "2007_train01.jpg"), "JPEGImages/2007_train01.jpg", "is missing"),
    (lambda v: _unlink(v / "SegmentationClass" / "2007_val01.png"), "SegmentationClass/2007_val01.png", "val.txt"),
    (lambda v: save_mask(v / "SegmentationClass" / "2007_train02.png", mask_of(8, 20, 20)),
     "SegmentationClass/2007_train02.png", "is 20x20 px but its image"),
    (lambda v: save_mask(v / "SegmentationClass" / "2007_train03.png", mask_of(30)),
     "SegmentationClass/2007_train03.png", "pixel value 30 is no class (0..20)"),
    (lambda v: (v / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_train00\n"),
     "val.txt", "both list 2007_train00"),
])
def test_bad_voc_input_is_one_line_naming_the_file(voc, tmp_path, spoil, names, says):
    root = broken(voc, tmp_path, spoil)
    with pytest.raises(DataError) as e:
        load_dataset(seg_cfg(root))
    line = str(e.value)
    assert "\n" not in line and names in line and says in line, line


def _rgb_mask(d):
    Image.fromarray(photo_of(mask_of(1))).save(d / "masks" / "img1.png")


@pytest.mark.parametrize("spoil, names, says", [
    (lambda d: (d / "masks" / "img2.png").unlink(), "images/img2.png", "has no mask"),
    (lambda d: save_mask(d / "masks" / "stray.png", mask_of(1)), "masks/stray.png", "has no image"),
    (_rgb_mask, "masks/img1.png", "mode RGB is no mask"),
    (lambda d: (d / "classes.txt").write_text("a\nb\n"), "masks/img1.png", "pixel value 2 is no class (0..1)"),
    (lambda d: (d / "images" / "img3.jpg").write_bytes(b"not a jpeg"), "img3", "share the name"),
    (lambda d: (d / "images" / "img3.png").write_bytes(b"not a png"), "images/img3.png", "cannot decode the image"),
])
def test_bad_folder_input_is_one_line_naming_the_file(tmp_path, spoil, names, says):
    root = make_segfolder(tmp_path / "seg")
    spoil(root)
    with pytest.raises(DataError) as e:
        load_dataset(seg_cfg(root, "segfolder", "--val_fraction=0"))
    line = str(e.value)
    assert "\n" not in line and names in line and says in line, line


def test_the_cli_says_one_line_and_classify_refuses_masks(voc, tmp_path, capsys):
    line, _ = one_line_exit(train.cli, ["--preset=smoke", f"--data_dir={voc}", "--dataset=voc"], capsys)
    assert "--dataset=voc with --task=classify: its labels are masks; pass --task=segment" in line
    line, _ = one_line_exit(train.cli, ["--preset=smoke", f"--data_dir={voc}", "--dataset=segfolder"], capsys)
    assert "--dataset=segfolder with --task=classify: its labels are masks" in line
    line, _ = one_line_exit(train.cli, ["--preset=smoke", "--task=segment", "--dataset=intel"], capsys)
    assert "--dataset=fashion-mnist-scenes, voc or segfolder" in line
    root = broken(voc, tmp_path, lambda v: save_mask(v / "SegmentationClass" / "2007_val00.png", mask_of(1, 24, 20)))
    line, _ = one_line_exit(train.cli, small_run_args(root, tmp_path / "runs", "--task=segment", "--dataset=voc",
                                                      "--method=ce", "--blocks=2", "--image_size=16"), capsys,
                            quiet=False)  # the decoding's progress bar may come first
    assert line.startswith("error: ") and "2007_val00.png is 20x24 px but its image" in line, line


def test_a_tiny_voc_run_trains_and_reports_miou(voc, tmp_path):
    out = tmp_path / "runs"
    train.cli(small_run_args(voc, out, "--task=segment", "--dataset=voc", "--method=ce", "--blocks=2", "--width=4",
                             "--image_size=16", "--val_fraction=0.25", "--batch_size=2", "--epochs=1",
                             "--tensorboard=False"))
    summary, = out.glob("*/summary.json")
    s = json.loads(summary.read_text())
    assert s["status"] == "complete" and s["task"] == "segment" and s["dataset"] == "voc"
    assert 0 <= s["test_miou"] <= 100 and len(s["test_iou"]) == 21 and s["best_val_miou"] is not None
    import evaluate  # an RGB run's examples picture: colour images beside their masks
    evaluate.cli([f"--run={summary.parent}"])
    assert (summary.parent / "segmentation_examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_crop_pads_a_photos_mask_with_no_label_and_a_scenes_with_background():
    import torch
    from data.dataset import Split
    from data.sampler import BatchSampler

    masks = torch.full((8, 12, 12), 3, dtype=torch.uint8)
    masks[:, 0, 0] = 255  # VOC's border: no label, before and after
    data = Split(torch.full((8, 1, 12, 12), 200, dtype=torch.uint8), masks)
    for pad_ignored, pad in ((True, -1), (False, 0)):
        sampler = BatchSampler(data, 8, "crop+flip", (0.0,), (1.0,), False, torch.Generator().manual_seed(0),
                               pad_ignored=pad_ignored)
        b = next(iter(sampler.epoch()))
        padded = b.x[:, 0] == 0  # the images are 200 everywhere: a zero pixel is padding
        assert padded.any() and bool((b.y[padded] == pad).all())
        assert set(b.y[~padded].unique().tolist()) <= {3, -1}  # the rest keeps its labels (and no-label pixels)
