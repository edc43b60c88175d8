"""Batch transforms on tensors (any device): normalization and augmentation of uint8 batches.

Host-to-GPU copies here are non_blocking and the per-channel constants are made once per device:
a blocking copy (or torch.as_tensor(list, device="cuda")) would make the host wait for the GPU on
every batch."""
import functools
import math

import numpy as np
import torch


@functools.lru_cache(maxsize=32)
def _scale_shift(mean: tuple, std: tuple, device: torch.device) -> tuple:
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (1.0 / (255.0 * s)).to(device), (m / s).to(device)


def normalize(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 (x / 255 - mean) / std per channel, on x's device, keeping x's memory format."""
    scale, shift = _scale_shift(tuple(map(float, mean)), tuple(map(float, std)), x_uint8.device)
    return x_uint8.to(torch.float32).mul(scale).sub_(shift)


def prepare_batch(images_u8, mean, std, channels_last: bool) -> torch.Tensor:
    """A uint8 batch as the model takes it: normalized float32, NHWC in memory when channels_last."""
    x = normalize(images_u8, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


AUGMENT_MODES = ("none", "flip", "crop+flip")


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator, pad: int = 4,
                  return_flips: bool = False):
    """Random horizontal flips ("flip"), plus random crops with `pad` zero padding ("crop+flip").

    With return_flips=True also returns the bool mask of flipped images (on x's device), which
    the teacher-logit cache uses to pick the flipped view's logits.

    Random numbers come from the CPU `generator` and then move to x's device, so a seed gives the
    same batch on CPU and GPU. The crop is one gather over padded images: no loop over images.
    """
    if mode == "none":
        return (x, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)) if return_flips else x
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment mode must be one of {AUGMENT_MODES}, got {mode!r}")
    n, c, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    if mode == "flip":
        pad = 0
        dy = dx = torch.zeros(n, dtype=torch.int64)
    else:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    # output pixel (i, j) of image k reads input pixel (dy-pad + i, dx-pad + j), mirrored to
    # (dy-pad + i, dx-pad + w-1-j) when flipped; pixels that fall outside are zero. One flat index
    # per pixel, shared by the channels, makes the batch one gather (no padded copy, no loop).
    j = torch.arange(w)
    cols = torch.where(flip[:, None], w - 1 - j, j) + (dx - pad)[:, None]  # [n, w]
    rows = (dy - pad)[:, None] + torch.arange(h)                            # [n, h]
    outside = ((rows < 0) | (rows >= h))[:, :, None] | ((cols < 0) | (cols >= w))[:, None, :]
    flat = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    flat, outside = flat.reshape(n, h * w).to(x.device, non_blocking=True), outside.to(x.device, non_blocking=True)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    idx = flat[:, None, :].expand(n, c, h * w)
    torch.gather(x.reshape(n, c, h * w), 2, idx, out=out.view(n, c, h * w))
    if pad:
        out.masked_fill_(outside[:, None], 0)
    return (out, flip.to(x.device, non_blocking=True)) if return_flips else out


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator, scale=(0.02, 0.4),
                 ratio=(0.3, 1 / 0.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) on a normalized batch: with probability p per image, one
    rectangle of area scale * H * W and aspect ratio in `ratio` (log-uniform) is filled with N(0, 1)
    noise (random values: the paper's best setting on CIFAR). Where the paper retries a rectangle that
    does not fit, its sides are clipped to the image. Random numbers come from the CPU `generator`."""
    n, c, h, w = x.shape
    apply = torch.rand(n, generator=generator) < p
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=generator)
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h).long()
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=generator) * (h - eh + 1)).floor().long()
    left = (torch.rand(n, generator=generator) * (w - ew + 1)).floor().long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :] & apply[:, None, None])
    noise = torch.randn((n, c, h, w), generator=generator)
    out = torch.where(inside[:, None].to(x.device, non_blocking=True), noise.to(x.device, x.dtype, non_blocking=True), x)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, generator: torch.Generator) -> tuple:
    """Mixup (Zhang et al. 2018): the batch blended with a shuffle of itself by lam ~ Beta(alpha, alpha).
    Returns (mixed x, soft targets lam * onehot(y) + (1 - lam) * onehot(y[perm])). The Beta draw is
    seeded from `generator`, so the whole batch still follows the one CPU generator."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
    # an unlabeled image (label < 0, a transfer set's) has no target: a zero row, which no loss of it reads
    onehot = torch.nn.functional.one_hot(y.clamp(min=0), num_classes).float() * (y >= 0).unsqueeze(1)
    return x.mul(lam).add_(x[perm], alpha=1.0 - lam), onehot.mul(lam).add_(onehot[perm], alpha=1.0 - lam)
