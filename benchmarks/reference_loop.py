"""The training loop the way the original coursework repo wrote it: the baseline of bench_train.py.

Every epoch, every image is opened and decoded with PIL, resized and converted to a float tensor by
a torchvision transform (ImageFolder + DataLoader), the frozen teacher runs on every batch, and the
loss and the batch accuracy are read back with .item() per batch. fp32, NCHW, Adam 1e-3, Hinton KD.
Only one thing differs from the original on purpose: drop_last=True, so the loop trains on exactly
the images the project's loop trains on (it drops the ragged last batch too).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


def image_folder(root: Path, size: int, mean, std, train: bool, mode: str):
    """torchvision ImageFolder with the original's transform: Resize((size, size)), flip, ToTensor, Normalize."""
    from torchvision import datasets, transforms

    steps = [transforms.Resize((size, size))]
    if train:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]

    def loader(path):  # torchvision's pil_loader, with the channel count of the dataset
        with open(path, "rb") as f:
            return Image.open(f).convert(mode)

    # allow_empty: a small subset may miss a class; its folder still exists, so labels keep their index
    return datasets.ImageFolder(str(root), transform=transforms.Compose(steps), loader=loader, allow_empty=True)


def pil_mean_std(root: Path, mode: str) -> tuple:
    """Per-channel mean/std of a folder's images in [0, 1] (the constants the original hard-coded)."""
    from torchvision import datasets

    ds = datasets.ImageFolder(str(root), allow_empty=True)
    total, sq, n = 0.0, 0.0, 0
    for path, _ in ds.samples:
        with Image.open(path) as im:
            a = np.asarray(im.convert(mode), dtype=np.float64).reshape(-1, len(mode)) / 255.0
        total, sq, n = total + a.sum(0), sq + (a ** 2).sum(0), n + a.shape[0]
    mean = total / n
    return tuple(mean.tolist()), tuple(np.sqrt(np.maximum(sq / n - mean ** 2, 0)).tolist())


def write_png_tree(root: Path, split: str, images: np.ndarray, labels: np.ndarray, classes) -> Path:
    """uint8 [N, H, W] or [N, C, H, W] arrays -> root/split/<NN_class>/<i>.png (an ImageFolder tree).

    The folder names keep the label order (ImageFolder sorts them), so label k stays label k."""
    out = root / split
    dirs = [out / f"{k:02d}_{str(name).replace('/', '-')}" for k, name in enumerate(classes)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        d = dirs[int(label)]
        arr = img if img.ndim == 2 else (img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        Image.fromarray(np.ascontiguousarray(arr)).save(d / f"{i}.png")
    return out


def kd_loss_original(student_logits, teacher_logits, labels, temperature: float, alpha: float,
                     kd_weight: float = None):
    """alpha * CE + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)), as the original wrote it
    (`kd_weight` replaces 1 - alpha, to match the project's separate weights)."""
    soft = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(student_logits / temperature, dim=1),
                                               F.softmax(teacher_logits / temperature, dim=1))
    w = 1.0 - alpha if kd_weight is None else kd_weight
    return alpha * F.cross_entropy(student_logits, labels) + w * temperature ** 2 * soft


def run_reference(student, teacher, train_root: Path, test_root: Path, *, size: int, mean, std, mode: str,
                  epochs: int, batch_size: int, lr: float, temperature: float, alpha: float, device,
                  workers: int, seed: int, ckpt_path: Path, kd_weight: float = None) -> dict:
    """Train `student` with KD from `teacher` the original way (teacher None: plain cross-entropy, the
    CE control); returns timings and accuracies.

    The clock starts before the datasets are built (the original's process did that too) and stops
    after the last evaluation. `data_seconds` is time spent waiting for the DataLoader, `teacher_seconds`
    the teacher forwards (CPU only: on CUDA they are asynchronous and not timed separately)."""
    device = torch.device(device)
    pin = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if pin else (lambda: None)
    t_start = time.perf_counter()
    train_ds = image_folder(train_root, size, mean, std, train=True, mode=mode)
    test_ds = image_folder(test_root, size, mean, std, train=False, mode=mode)
    g = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                               num_workers=workers, pin_memory=pin, generator=g,
                                               persistent_workers=workers > 0)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=batch_size, shuffle=False,
                                              num_workers=workers, pin_memory=pin)
    student.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    history, best_acc, data_s, teacher_s, seen = [], -1.0, 0.0, 0.0, 0
    for epoch in range(epochs):
        student.train()
        running_loss, correct, total = 0.0, 0, 0
        t_wait = time.perf_counter()
        for images, labels in train_loader:
            data_s += time.perf_counter() - t_wait
            images, labels = images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
            optimizer.zero_grad()
            outputs = student(images)
            if teacher is None:
                loss = F.cross_entropy(outputs, labels)
            else:
                t0 = time.perf_counter()
                with torch.no_grad():
                    teacher_logits = teacher(images)
                teacher_s += time.perf_counter() - t0
                loss = kd_loss_original(outputs, teacher_logits, labels, temperature, alpha, kd_weight)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * images.size(0)  # the original's per-batch host syncs
            _, predicted = outputs.max(1)
            correct += (predicted == labels).sum().item()
            total += labels.size(0)
            t_wait = time.perf_counter()
        seen += total
        student.eval()
        test_correct, test_total, test_loss = 0, 0, 0.0
        with torch.no_grad():
            for images, labels in test_loader:
                images, labels = images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
                outputs = student(images)
                test_loss += F.cross_entropy(outputs, labels).item() * images.size(0)
                test_correct += (outputs.argmax(1) == labels).sum().item()
                test_total += labels.size(0)
        test_acc = 100.0 * test_correct / test_total
        if test_acc > best_acc:
            best_acc = test_acc
            torch.save(student.state_dict(), ckpt_path)
        history.append({"epoch": epoch + 1, "train_loss": running_loss / total, "train_acc": 100.0 * correct / total,
                        "test_loss": test_loss / test_total, "test_acc": test_acc})
        print(f"  reference epoch {epoch + 1}/{epochs}  loss {running_loss / total:.4f}  "
              f"train {100.0 * correct / total:.2f}%  test {test_acc:.2f}%", flush=True)
    sync()
    seconds = time.perf_counter() - t_start
    return {"seconds": seconds, "train_images_seen": seen, "images_per_second": seen / seconds,
            "final_test_acc": history[-1]["test_acc"], "best_test_acc": best_acc, "history": history,
            "data_wait_seconds": data_s, "teacher_seconds": teacher_s if not pin else None,
            "loader_workers": workers, "pin_memory": pin}
