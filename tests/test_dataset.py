"""data/dataset.py: the uint8 cache, the dataset layouts, the bad-input messages, subsets, augmentation."""
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from config import make_config
from data import folders, sources
from data.dataset import DataError, load_dataset, load_pred_images, stratified_subset
from data.transforms import augment_batch, normalize
from tests.fixtures import (INTEL_CLASSES, ODD_CORRUPT, ODD_VALID, cifar_pattern, class_image, fashion_pattern,
                            intel_test_per_class, make_cifar, make_fashion_mnist_idx, make_imagefolder,
                            make_intel_folder)
from utils.errors import UserError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def cfg(**kw):
    base = dict(dataset="fashion-mnist", data_dir="data", image_size=0, max_train_samples=0,
                max_test_samples=0, val_fraction=0.0, seed=0, num_workers=0)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never reach the network: the torchvision fallback reports failure at once."""
    monkeypatch.setattr(sources, "_torchvision_download", lambda cls, data_dir: "offline in tests")


def count_calls(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ----------------------------------------------------------------------------- fashion-mnist

@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_real_fashion_mnist_loads_and_caches(tmp_path):
    d = load_dataset(cfg(data_dir=str(tmp_path)))
    assert (len(d.train), len(d.test)) == (60000, 10000)
    assert d.train.images.shape == (60000, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert d.train.labels.dtype == torch.int64 and d.train.images.is_contiguous()
    assert (d.in_channels, d.image_size, d.num_classes) == (1, 28, 10)
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert torch.bincount(d.train.labels).tolist() == [6000] * 10
    assert d.mean[0] == pytest.approx(0.2860, abs=1e-3) and d.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert str(REAL_FASHION) in d.source and "idx.gz" in d.source
    t0 = time.perf_counter()
    again = load_dataset(cfg(data_dir=str(tmp_path)))
    assert time.perf_counter() - t0 < 1.0
    assert torch.equal(again.train.images, d.train.images) and again.source == d.source


@pytest.mark.parametrize("gz,sub", [(True, ""), (False, "fashion-mnist"), (True, "FashionMNIST/raw")])
def test_idx_parse(tmp_path, gz, sub):
    make_fashion_mnist_idx(tmp_path / sub, n_train=30, n_test=12, gz=gz)
    d = load_dataset(cfg(data_dir=str(tmp_path)))
    tx, ty = fashion_pattern(30)
    vx, vy = fashion_pattern(12, offset=30)
    assert torch.equal(d.train.images[:, 0], torch.from_numpy(tx))
    assert torch.equal(d.train.labels, torch.from_numpy(ty).long())
    assert torch.equal(d.test.images[:, 0], torch.from_numpy(vx))
    assert torch.equal(d.test.labels, torch.from_numpy(vy).long())
    assert str(tmp_path / sub).rstrip("/") in d.source


def test_bad_idx_file_is_a_data_error(tmp_path):
    make_fashion_mnist_idx(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")  # truncated
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset(cfg(data_dir=str(tmp_path)))


def test_cache_reused_then_rebuilt_on_change(tmp_path, monkeypatch):
    make_fashion_mnist_idx(tmp_path)
    reads = count_calls(monkeypatch, folders, "read_idx")
    first = load_dataset(cfg(data_dir=str(tmp_path)))
    assert len(reads) == 4
    cache = tmp_path / "cache" / "fashion-mnist-28px.safetensors"
    assert cache.is_file() and not [p for p in cache.parent.iterdir() if p.suffix == ".tmp"]

    second = load_dataset(cfg(data_dir=str(tmp_path)))
    assert len(reads) == 4  # nothing decoded
    assert torch.equal(first.train.images, second.train.images) and first.mean == second.mean

    src = tmp_path / "t10k-labels-idx1-ubyte.gz"  # a changed source file (new mtime) rebuilds
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    load_dataset(cfg(data_dir=str(tmp_path)))
    assert len(reads) == 8

    big = load_dataset(cfg(data_dir=str(tmp_path), image_size=32))  # another size: its own cache
    assert len(reads) == 12 and big.train.images.shape[1:] == (1, 32, 32)
    assert big.train.images.dtype == torch.uint8 and big.image_size == 32
    assert (tmp_path / "cache" / "fashion-mnist-32px.safetensors").is_file()
    load_dataset(cfg(data_dir=str(tmp_path)))
    assert len(reads) == 12  # the 28 px cache is still valid


def test_cache_is_plain_safetensors(tmp_path):
    make_fashion_mnist_idx(tmp_path)
    load_dataset(cfg(data_dir=str(tmp_path)))
    t = load_file(str(tmp_path / "cache" / "fashion-mnist-28px.safetensors"))
    assert set(t) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert t["train_images"].dtype == torch.uint8 and t["train_labels"].dtype == torch.int64


def test_corrupt_cache_is_rebuilt(tmp_path):
    make_fashion_mnist_idx(tmp_path)
    load_dataset(cfg(data_dir=str(tmp_path)))
    (tmp_path / "cache" / "fashion-mnist-28px.safetensors").write_bytes(b"garbage")
    assert len(load_dataset(cfg(data_dir=str(tmp_path))).train) == 50


def test_a_wrong_shape_data_cache_is_one_line_then_rebuilt(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    make_fashion_mnist_idx(tmp_path / "fashion-mnist")
    config = make_config(["--preset=smoke", f"--data_dir={tmp_path}"])
    before = load_dataset(config)
    cache = tmp_path / "cache" / "fashion-mnist-28px.safetensors"
    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    for spoil in ("channels", "labels"):
        t = load_file(str(cache))
        if spoil == "channels":
            t["train_images"] = t["train_images"][:, 0].contiguous()  # the channel dimension lost
        else:
            t["train_labels"] = t["train_labels"] + 100  # labels out of range
        save_file(t, str(cache), metadata=meta)
        capsys.readouterr()
        after = load_dataset(config)
        err = capsys.readouterr().err
        assert f"{cache}: " in err and "; rebuilding" in err, err
        assert torch.equal(after.train.images, before.train.images)
        assert torch.equal(after.train.labels, before.train.labels)


def test_fashion_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_SYSTEM_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset(cfg(data_dir=str(tmp_path / "empty")))
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UserError)


def test_subset_taken_after_loading(tmp_path):
    make_fashion_mnist_idx(tmp_path, n_train=100, n_test=40)
    d = load_dataset(cfg(data_dir=str(tmp_path), max_train_samples=20, max_test_samples=10, seed=3))
    assert (len(d.train), len(d.test)) == (20, 10)
    assert torch.bincount(d.train.labels, minlength=10).tolist() == [2] * 10
    full = load_dataset(cfg(data_dir=str(tmp_path)))
    assert len(full.train) == 100 and full.mean == d.mean  # mean/std of the whole train cache


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(cfg(dataset="mnist", data_dir=str(tmp_path)))


# ----------------------------------------------------------------------------- folders

@pytest.mark.parametrize("nested", [True, False])
def test_intel_layouts(tmp_path, nested):
    root = make_intel_folder(tmp_path, per_class=3, size=150, nested=nested)
    d = load_dataset(cfg(dataset="intel", data_dir=str(root)))
    assert d.classes == INTEL_CLASSES
    assert len(d.train) == 18 and len(d.test) == 6 * intel_test_per_class(3)
    assert d.train.images.shape[1:] == (3, 150, 150) and d.train.images.dtype == torch.uint8
    assert torch.bincount(d.train.labels).tolist() == [3] * 6
    assert "image folders" in d.source and len(d.mean) == 3


def test_intel_parent_folder_and_resize(tmp_path):
    make_intel_folder(tmp_path / "intel-image-classification", per_class=2, size=150)
    d = load_dataset(cfg(dataset="intel", data_dir=str(tmp_path), image_size=32, num_workers=2))
    assert d.train.images.shape == (12, 3, 32, 32)
    assert "intel-image-classification" in d.source
    assert (tmp_path / "cache" / "intel-32px.safetensors").is_file()


def test_intel_odd_files(tmp_path, capsys):
    root = make_intel_folder(tmp_path, per_class=2, odd=True)
    d = load_dataset(cfg(dataset="intel", data_dir=str(root)))
    assert len(d.train) == 6 * 2 + ODD_VALID
    assert d.train.images.shape[1:] == (3, 150, 150)
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "skipped 1 " in warning[0] and ODD_CORRUPT.split("/")[-1] in warning[0]
    assert "notes.txt" not in warning[0]
    # files are in class order, then name order: the grey JPEG is glacier's last, the CMYK one sea's last
    labels = d.train.labels.tolist()
    gray = d.train.images[max(i for i, y in enumerate(labels) if y == INTEL_CLASSES.index("glacier"))]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    cmyk = d.train.images[max(i for i, y in enumerate(labels) if y == INTEL_CLASSES.index("sea"))].float()
    want = torch.from_numpy(class_image(4, 903, 150)).permute(2, 0, 1).float()
    assert (cmyk.mean((1, 2)) - want.mean((1, 2))).abs().max() < 12  # real colours, not inverted


def test_empty_class_folder(tmp_path):
    root = make_intel_folder(tmp_path, per_class=1)
    empty = root / "seg_train" / "seg_train" / "zebra"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="zebra"):
        load_dataset(cfg(dataset="intel", data_dir=str(root)))


def test_class_of_only_corrupt_files(tmp_path):
    root = make_imagefolder(tmp_path, per_class=2)
    for p in (root / "train" / "dog").iterdir():
        p.write_bytes(b"not an image")
    with pytest.raises(DataError, match=str(root / "train" / "dog")):
        load_dataset(cfg(dataset="imagefolder", data_dir=str(root)))


def test_missing_split_and_missing_dir(tmp_path):
    root = make_intel_folder(tmp_path / "intel", per_class=1)
    for p in sorted((root / "seg_test").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "seg_test").rmdir()
    with pytest.raises(DataError, match="seg_test"):
        load_dataset(cfg(dataset="intel", data_dir=str(root)))
    missing = tmp_path / "no-such-dir"
    for name in ("intel", "imagefolder"):
        with pytest.raises(DataError, match=str(missing)):
            load_dataset(cfg(dataset=name, data_dir=str(missing)))


def test_imagefolder_with_val(tmp_path):
    root = make_imagefolder(tmp_path, classes=("a", "b"), per_class=2, size=40, test_name="val")
    d = load_dataset(cfg(dataset="imagefolder", data_dir=str(root)))
    assert d.classes == ("a", "b") and d.image_size == 64  # 0 means 64 for imagefolder
    assert (len(d.train), len(d.test)) == (4, 4)


def test_test_split_missing_a_class_warns_naming_it(tmp_path, capsys):
    root = make_imagefolder(tmp_path, classes=("cat", "dog", "bird"), per_class=2, size=16)
    for p in (root / "test" / "bird").iterdir():
        p.unlink()
    (root / "test" / "bird").rmdir()
    d = load_dataset(make_config(dataset="imagefolder", data_dir=str(root), image_size=16))
    err = capsys.readouterr().err
    assert "warning:" in err and "['bird']" in err and "test" in err
    assert d.classes == ("bird", "cat", "dog") and sorted(set(d.test.labels.tolist())) == [1, 2]


def test_images_in_nested_subfolders_of_a_class_are_counted_in_a_warning(tmp_path, capsys):
    root = make_imagefolder(tmp_path, classes=("cat", "dog"), per_class=2, size=16)
    for rel in ("cat/more/a.jpg", "cat/more/b.jpg", "dog/x/y/c.png"):
        (root / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "train" / rel).write_bytes((root / "train" / "cat" / "img0.jpg").read_bytes())
    d = load_dataset(make_config(dataset="imagefolder", data_dir=str(root), image_size=16))
    err = capsys.readouterr().err
    assert "ignored 3 image file(s) in sub-folders" in err and "more" in err
    assert len(d.train) == 4  # still only the images directly in each class folder


def test_pred_images(tmp_path):
    root = make_intel_folder(tmp_path, per_class=1, pred=5)
    x, paths = load_pred_images(cfg(dataset="intel", data_dir=str(root)))
    assert x.shape == (5, 3, 150, 150) and x.dtype == torch.uint8
    assert paths == [f"{20000 + i}.jpg" for i in range(5)]
    x2, paths2 = load_pred_images(cfg(dataset="intel", data_dir=str(root)))
    assert torch.equal(x, x2) and paths2 == paths
    with pytest.raises(DataError, match="intel"):
        load_pred_images(cfg(dataset="fashion-mnist", data_dir=str(root)))
    bare = make_intel_folder(tmp_path / "bare", per_class=1)
    with pytest.raises(DataError, match="seg_pred"):
        load_pred_images(cfg(dataset="intel", data_dir=str(bare)))


# ----------------------------------------------------------------------------- cifar

def test_cifar10_batches(tmp_path):
    make_cifar(tmp_path, "cifar10", per_batch=6, n_test=4)
    d = load_dataset(cfg(dataset="cifar10", data_dir=str(tmp_path)))
    assert (len(d.train), len(d.test)) == (30, 4)
    assert d.train.images.shape[1:] == (3, 32, 32) and d.classes[0] == "airplane" and d.num_classes == 10
    data, labels = cifar_pattern(6, 10, offset=0)
    assert torch.equal(d.train.images[:6], torch.from_numpy(data.reshape(6, 3, 32, 32)))
    assert d.train.labels[:6].tolist() == labels
    assert "cifar-10-batches-py" in d.source


def test_cifar100_batches_and_missing(tmp_path):
    make_cifar(tmp_path, "cifar100", per_batch=4, n_test=3)
    d = load_dataset(cfg(dataset="cifar100", data_dir=str(tmp_path)))
    assert (len(d.train), len(d.test), d.num_classes) == (20, 3, 100)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(cfg(dataset="cifar10", data_dir=str(tmp_path)))


def test_cifar_unpickler_refuses_code(tmp_path):
    make_cifar(tmp_path, "cifar10", per_batch=2, n_test=2)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f, protocol=2)  # a pickle naming a callable
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(cfg(dataset="cifar10", data_dir=str(tmp_path)))


# ----------------------------------------------------------------------------- subsets, tensors

def test_stratified_subset():
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[order]
    idx = stratified_subset(labels, 10, seed=1)
    assert idx.dtype == torch.int64 and len(idx) == 10 and torch.equal(idx, idx.sort().values)
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, stratified_subset(labels, 10, seed=1))
    assert not torch.equal(idx, stratified_subset(labels, 10, seed=2))
    assert len(stratified_subset(labels, 7, seed=0)) == 7  # rounding still gives exactly n
    assert len(set(stratified_subset(labels, 99, seed=0).tolist())) == 99
    assert torch.equal(stratified_subset(labels, 100, seed=0), torch.arange(100))
    assert torch.equal(stratified_subset(labels, 500, seed=0), torch.arange(100))


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 2, 2).contiguous()
    y = normalize(x, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))
    assert y.dtype == torch.float32 and x.dtype == torch.uint8
    assert y[0, :, 0, 0].tolist() == pytest.approx([-1.0, -2.0, 0.0])
    assert y[0, :, 0, 1].tolist() == pytest.approx([1.0, 2.0, 1.0])
    cl = normalize(x.contiguous(memory_format=torch.channels_last), (0.5,) * 3, (0.5,) * 3)
    assert cl.is_contiguous(memory_format=torch.channels_last)


def _batch(dtype=torch.uint8, n=32, c=3, h=12, w=10):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, c, h, w), generator=g).to(dtype)  # no zeros: borders are visible


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_basics(dtype):
    x = _batch(dtype)
    assert augment_batch(x, "none", torch.Generator()) is x
    for mode in ("flip", "crop+flip"):
        a = augment_batch(x, mode, torch.Generator().manual_seed(5))
        b = augment_batch(x, mode, torch.Generator().manual_seed(5))
        assert a.shape == x.shape and a.dtype == dtype and torch.equal(a, b)
        cl = augment_batch(x.contiguous(memory_format=torch.channels_last), mode, torch.Generator().manual_seed(5))
        assert torch.equal(cl, a) and cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError):
        augment_batch(x, "rotate", torch.Generator())


def test_flip_really_flips():
    x = _batch()
    y = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(len(x))]
    same = [bool(torch.equal(y[i], x[i])) for i in range(len(x))]
    assert all(f or s for f, s in zip(flipped, same))
    assert 4 < sum(flipped) < 28


def _shifted(img, dy, dx, flip, pad):
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    crop = padded[:, dy:dy + h, dx:dx + w]
    return crop.flip(-1) if flip else crop


def test_crop_is_a_shifted_copy_with_zero_border():
    pad = 3
    x = _batch()
    y = augment_batch(x, "crop+flip", torch.Generator().manual_seed(1), pad=pad)
    shifts = set()
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (False, True)
                   if torch.equal(y[i], _shifted(x[i], dy, dx, f, pad))]
        assert matches, f"image {i} is not a padded crop of its input"
        shifts.add(matches[0])
    assert len(shifts) > 10  # offsets differ per image


def test_augment_is_fast():
    x = torch.randint(0, 256, (256, 3, 150, 150), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    augment_batch(x, "crop+flip", g)
    t0 = time.process_time()
    augment_batch(x, "crop+flip", g)
    assert time.process_time() - t0 < 0.5  # CPU seconds, so a busy machine does not fail it
