"""data/scenes.py's contract: the same seed gives the same bytes, the mask agrees with the image (a pixel
labelled k+1 is bright and shows a class-k garment), 1..max_items garments a scene, each pasted whole inside
the canvas, train / val / test scenes share no garment, and a bad argument is one clear line.

Small synthetic garments (28x28, a 2-px zero border) stand in for Fashion-MNIST; one test reads the real
files where the machine has them."""
import hashlib

import pytest
import torch

from data import scenes
from data.folders import DataError, read_idx
from data.scenes import (GARMENT_THRESHOLD, IGNORE_INDEX, SCENE_CLASSES, build_scenes, class_pixel_counts,
                         garment_pools, scene_splits, seed_for)
from data.sources import FASHION_CLASSES, find_fashion
from tests.fixtures import load_script

T = GARMENT_THRESHOLD
# sha256 of build_scenes(*blobs(20), count=8, seed=0): a change of torch's RNG or of the recipe shows here
PINNED_SHA256 = "ddf31f0970dd17bbe281decf926aae6b1954ac1d545f7e8c21fb225739fedf69"


def blobs(n: int, seed: int = 0, low: int = 0) -> tuple:
    """n garments: a zero border 2 px wide around random pixels in low..255 (dim ones included), random labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 2:26, 2:26] = torch.randint(low, 256, (n, 24, 24), generator=g).to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def id_garments(ids) -> tuple:
    """One garment per id: a 20x20 square of intensity `id` (> T) inside a faint ring at exactly T, on a zero
    border; label id % 10. Any bright pixel names its garment, and the ring tests that faint pixels never win."""
    ids = torch.as_tensor(list(ids))
    images = torch.zeros(len(ids), 28, 28, dtype=torch.uint8)
    images[:, 2:26, 2:26] = T
    images[:, 4:24, 4:24] = ids.to(torch.uint8)[:, None, None]
    return images, ids % 10


def visible_ids(canvases: torch.Tensor) -> set:
    return set(canvases[canvases > T].unique().tolist())


def test_same_seed_same_bytes_other_seed_other_bytes(monkeypatch):
    images, labels = blobs(50)
    canvases, masks = build_scenes(images, labels, 64, seed=3)
    assert canvases.shape == (64, 1, 64, 84) and masks.shape == (64, 64, 84)
    assert canvases.dtype == masks.dtype == torch.uint8
    again = build_scenes(images.unsqueeze(1), labels, 64, seed=3)  # [N, 1, 28, 28] is the same garments
    assert torch.equal(canvases, again[0]) and torch.equal(masks, again[1])
    other = build_scenes(images, labels, 64, seed=4)
    assert not torch.equal(canvases, other[0]) and not torch.equal(masks, other[1])
    # more scenes than one chunk: the first ones do not depend on how many come after
    more = build_scenes(images, labels, 5000, seed=3)
    assert torch.equal(more[0][:64], canvases) and torch.equal(more[1][:64], masks)
    monkeypatch.setattr(scenes, "CHUNK", 7)  # nor on how the work is cut
    cut = build_scenes(images, labels, 64, seed=3)
    assert torch.equal(cut[0], canvases) and torch.equal(cut[1], masks)


def test_the_bytes_are_pinned():
    canvases, masks = build_scenes(*blobs(20), count=8, seed=0)
    digest = hashlib.sha256(canvases.numpy().tobytes() + masks.numpy().tobytes()).hexdigest()
    assert digest == PINNED_SHA256


def test_the_mask_labels_exactly_the_bright_pixels():
    canvases, masks = build_scenes(*blobs(40, seed=1), 300, max_items=3, seed=1)
    assert int(masks.max()) <= len(FASHION_CLASSES) and len(SCENE_CLASSES) == 11
    assert torch.equal(masks > 0, canvases[:, 0] > T)
    assert int((canvases[:, 0] > 0).logical_and(canvases[:, 0] <= T).sum()) > 0  # faint pixels stay, unlabelled


def test_a_labelled_pixel_shows_a_garment_of_its_class():
    images, labels = id_garments(range(40, 140))
    canvases, masks = build_scenes(images, labels, 400, max_items=3, seed=2)
    image = canvases[:, 0]
    labelled = masks > 0
    assert torch.equal(labelled, image > T)
    assert torch.equal(masks[labelled].long() - 1, image[labelled].long() % 10)
    assert int((image == T).sum()) > 0 and int(masks[image == T].max()) == 0  # the faint ring, unlabelled
    # overlaps happened: some scene shows pieces of several garments
    assert max(len(visible_ids(c)) for c in canvases) >= 2


def test_one_garment_is_pasted_whole_inside_the_canvas():
    images, labels = blobs(1, seed=5, low=1)  # every inside pixel nonzero: its bounding box is the inside
    canvases, masks = build_scenes(images, labels, 40, height=40, width=50, max_items=1, seed=5)
    corners = set()
    for canvas, mask in zip(canvases[:, 0], masks):
        rows, cols = canvas.nonzero(as_tuple=True)
        top, left = int(rows.min()) - 2, int(cols.min()) - 2
        assert 0 <= top <= 40 - 28 and 0 <= left <= 50 - 28
        want = torch.zeros(40, 50, dtype=torch.uint8)
        want[top:top + 28, left:left + 28] = images[0]
        assert torch.equal(canvas, want)
        assert torch.equal(mask, (want > T).to(torch.uint8) * (int(labels[0]) + 1))
        corners.add((top, left))
    assert len(corners) > 20
    exact = build_scenes(images, labels, 3, height=28, width=28, max_items=2, seed=0)[0]
    assert all(torch.equal(c[0], images[0]) for c in exact)  # a garment-sized canvas: the only place is (0, 0)


@pytest.mark.parametrize("max_items", [1, 3, 5])
def test_each_scene_holds_1_to_max_items_garments(max_items):
    dot = torch.zeros(1, 28, 28, dtype=torch.uint8)
    dot[0, 14, 14] = 200  # one bright pixel a garment: scenes rarely hide one under another
    canvases, _ = build_scenes(dot, torch.zeros(1, dtype=torch.long), 3000, max_items=max_items, seed=7)
    counts = (canvases[:, 0] > 0).sum((1, 2))
    assert set(counts.tolist()) == set(range(1, max_items + 1))
    assert abs(float(counts.float().mean()) - (1 + max_items) / 2) < 0.1  # uniform over 1..max_items


def test_train_val_and_test_scenes_share_no_garment():
    train_images, train_labels = id_garments(range(40, 140))
    test_images, test_labels = id_garments(range(150, 250))
    splits = scene_splits(train_images, train_labels, test_images, test_labels, n_train=300, n_val=100,
                          n_test=100, height=64, width=84, max_items=3, seed=0)
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 300, "val": 100, "test": 100}
    seen = {k: visible_ids(v[0]) for k, v in splits.items()}
    train_pool, val_pool = garment_pools(100, 300, 100, seed=0)
    assert len(val_pool) == 25 and not set(train_pool.tolist()) & set(val_pool.tolist())
    assert seen["train"] <= {40 + i for i in train_pool.tolist()} and len(seen["train"]) > 60
    assert seen["val"] <= {40 + i for i in val_pool.tolist()} and len(seen["val"]) > 15
    assert seen["test"] <= set(range(150, 250)) and len(seen["test"]) > 60
    for canvases, masks in splits.values():
        assert torch.equal(masks > 0, canvases[:, 0] > T)
    again = scene_splits(train_images, train_labels, test_images, test_labels, 300, 100, 100, seed=0)
    assert all(torch.equal(a, b) for k in splits for a, b in zip(splits[k], again[k]))
    assert len({seed_for(s, u) for s in range(5) for u in ("pools", "train", "val", "test")}) == 20


def test_garment_pools_cover_the_training_split():
    train, val = garment_pools(10, n_train=50, n_val=0)
    assert train.tolist() == list(range(10)) and len(val) == 0
    train, val = garment_pools(10, n_train=0, n_val=5)
    assert len(train) == 0 and val.tolist() == list(range(10))
    train, val = garment_pools(2, n_train=1000, n_val=1)  # neither pool empty while its split has scenes
    assert len(train) == len(val) == 1
    empty = scene_splits(*blobs(5), *blobs(5), n_train=4, n_val=0, n_test=0)
    assert empty["val"][0].shape == (0, 1, 64, 84) and empty["test"][1].shape == (0, 64, 84)


def test_class_pixel_counts():
    canvases, masks = build_scenes(*blobs(30, seed=3), 50, seed=3)
    counts = class_pixel_counts(masks)
    assert counts.tolist() == [int((masks == k).sum()) for k in range(11)] and int(counts.sum()) == masks.numel()
    masks[0, 0, :5] = IGNORE_INDEX
    assert int(class_pixel_counts(masks).sum()) == masks.numel() - 5  # unlabelled pixels are not counted
    masks[0, 0, 0] = 11
    with pytest.raises(DataError, match="mask value 11 is not a class"):
        class_pixel_counts(masks)


IMAGES, LABELS = blobs(6)
BAD = [  # (call, error, start of its one line)
    (lambda: build_scenes(IMAGES, LABELS, 4, height=27), ValueError, "a 27x84 canvas cannot hold a 28x28 garment"),
    (lambda: build_scenes(IMAGES, LABELS, 4, width=20), ValueError, "a 64x20 canvas cannot hold a 28x28 garment"),
    (lambda: build_scenes(IMAGES, LABELS, 4, max_items=0), ValueError, "max_items must be 1 or more"),
    (lambda: build_scenes(IMAGES, LABELS, -1), ValueError, "count must be 0 or more"),
    (lambda: build_scenes(IMAGES, LABELS, 2.5), ValueError, "count must be an int"),
    (lambda: build_scenes(IMAGES, LABELS[:5], 4), DataError, "6 garment images but 5 labels"),
    (lambda: build_scenes(IMAGES[:0], LABELS[:0], 4), DataError, "no garment images"),
    (lambda: build_scenes(IMAGES.float(), LABELS, 4), DataError, "garment images must be uint8"),
    (lambda: build_scenes(IMAGES, LABELS.float(), 4), DataError, "garment labels must be an integer tensor"),
    (lambda: build_scenes(IMAGES, LABELS + 10, 4), DataError, "garment labels must be in 0..9"),
    (lambda: scene_splits(IMAGES, LABELS, IMAGES, LABELS, 4, -1, 4), ValueError, "n_val must be an int, 0 or more"),
    (lambda: scene_splits(IMAGES[:1], LABELS[:1], IMAGES, LABELS, 4, 4, 4), DataError,
     "1 training garment(s) cannot be split"),
    (lambda: scene_splits(IMAGES, LABELS, IMAGES[:0], LABELS[:0], 4, 4, 4), DataError, "no garment images"),
]


@pytest.mark.parametrize("call, error, start", BAD, ids=[b[2][:30] for b in BAD])
def test_a_bad_argument_is_one_clear_line(call, error, start):
    with pytest.raises(error) as e:
        call()
    message = str(e.value)
    assert message.startswith(start) and "\n" not in message, message


def test_real_fashion_mnist_scenes(tmp_path):
    files = find_fashion(tmp_path)  # tmp_path is empty: only the system copy can be found
    if files is None:
        pytest.skip("Fashion-MNIST idx files not installed (dataset-fashion-mnist)")
    images = torch.from_numpy(read_idx(files["train_images"]).copy())
    labels = torch.from_numpy(read_idx(files["train_labels"]).copy()).long()
    canvases, masks = build_scenes(images, labels, 2000, seed=0)
    assert torch.equal(masks > 0, canvases[:, 0] > T)
    counts = class_pixel_counts(masks)
    assert (counts > 0).all()  # every class shows up
    assert 0.5 < float(counts[0]) / masks.numel() < 0.95  # mostly background, not all


def test_the_picture_script_draws_without_the_real_data():
    doc = load_script("docs/scenes_doc.py")
    images, labels = doc.synthetic_garments()
    canvases, masks = build_scenes(images, labels, doc.SHOWN, seed=0)
    assert len(masks.unique()) > 2  # several classes in six scenes: the fallback garments are bright enough
    assert doc.figure(canvases, masks, "synthetic").startswith(b"\x89PNG")
