"""Training batches: a seeded order per epoch over a device-resident uint8 split, each batch sliced,
augmented and normalized once. Every student of a group (and the teacher's online forward) sees the
same Batch."""
from dataclasses import dataclass

import torch

from data.dataset import Split, pixel_labels
from data.transforms import augment_batch, mixup, prepare_batch, random_erase


@dataclass
class Batch:
    x: torch.Tensor  # normalized float32, as the models take it (channels_last when asked)
    y: torch.Tensor  # int64 labels (of the first image, under mixup): training accuracy; masks [N, H, W] (-1: none)
    targets: torch.Tensor  # what the loss fits: y, or soft targets [N, classes] under mixup
    idx: torch.Tensor  # positions in the train split: the key of cached teacher outputs
    flips: torch.Tensor  # bool per image: horizontally flipped (the cache's "flip" view)


class BatchSampler:
    """`steps` full batches per epoch (the ragged last one is dropped: BatchNorm needs more than one
    sample, and fixed shapes keep kernels and graphs the same every step). All randomness, the order
    and the augmentation, comes from one CPU generator, so a seed gives the same batches on any device.

    augment: none | flip | crop+flip on the uint8 images; then random erasing (probability per image)
    and mixup (Beta alpha; 0 = off) on the normalized batch.

    shard=(rank, ranks): data parallelism. Every rank makes the same global batch from the same seeded
    generator (so a rank's images and augmentations are exactly those the single-process run gives
    those rows) and yields its contiguous block of batch_size / ranks rows."""

    def __init__(self, data: Split, batch_size: int, augment: str, mean, std, channels_last: bool,
                 generator: torch.Generator, random_erasing: float = 0.0, mixup: float = 0.0,
                 num_classes: int = 0, shard: tuple = (0, 1), pad_ignored: bool = False):
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.mean, self.std, self.channels_last, self.generator = mean, std, channels_last, generator
        self.random_erasing, self.mixup, self.num_classes = random_erasing, mixup, num_classes
        self.steps = max(1, len(data) // batch_size)
        self.dense = data.labels.dim() > 1  # a segmentation's masks, uint8 [N, H, W]
        # a crop's padding in a mask: background where the canvas goes on beyond the edge (the scenes), no label
        # where the picture ends (a photo's masks: VOC, a folder), as VOC's 255 border is
        self.pad_ignored = pad_ignored
        rank, ranks = shard
        if batch_size % ranks:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {ranks} ranks")
        per = batch_size // ranks
        self.rows = slice(rank * per, (rank + 1) * per) if ranks > 1 else slice(None)

    @property
    def images_per_epoch(self) -> int:
        return self.steps * self.batch_size

    @property
    def fixed_views(self) -> bool:
        """True when every image the model sees is one of at most two fixed views of a training image
        (itself, or its mirror): the teacher's outputs can then be computed once and looked up."""
        return self.augment in ("none", "flip") and self.random_erasing == 0 and self.mixup == 0

    def epoch(self):
        """The batches of one epoch, in a new seeded order."""
        dev = self.data.images.device
        order = torch.randperm(len(self.data), generator=self.generator).to(dev)  # one copy per epoch
        bs = self.batch_size
        for step in range(self.steps):
            idx = order[step * bs:(step + 1) * bs]
            if self.dense:  # masks ride as one more channel: flipped and cropped with their images
                masks = self.data.labels[idx]
                if self.pad_ignored:  # uint8 k -> k + 1 and 255 (no label) -> 0, so the zero padding is "no label"
                    masks = masks + 1
                both = torch.cat([self.data.images[idx], masks.unsqueeze(1)], 1)
                both, flips = augment_batch(both, self.augment, self.generator, return_flips=True)
                x_u8, masks = both[:, :-1], both[:, -1]
                y = pixel_labels(masks - 1 if self.pad_ignored else masks)  # (0 - 1 wraps to 255: no label)
            else:
                y = self.data.labels[idx]
                x_u8, flips = augment_batch(self.data.images[idx], self.augment, self.generator, return_flips=True)
            x = prepare_batch(x_u8, self.mean, self.std, self.channels_last)
            if self.random_erasing > 0:
                x = random_erase(x, self.random_erasing, self.generator)
            targets = y
            if self.mixup > 0:
                x, targets = mixup(x, y, self.num_classes, self.mixup, self.generator)
            r = self.rows
            yield Batch(x[r], y[r], targets[r], idx[r], flips[r])
