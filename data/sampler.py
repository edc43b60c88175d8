"""Training batches: a seeded order per epoch over a device-resident uint8 split, each batch sliced,
augmented and normalized once. Every student of a group (and the teacher's online forward) sees the
same Batch."""
from dataclasses import dataclass

import torch

from data.dataset import Split
from data.transforms import augment_batch, prepare_batch


@dataclass
class Batch:
    x: torch.Tensor  # normalized float32, as the models take it (channels_last when asked)
    y: torch.Tensor  # int64 labels
    idx: torch.Tensor  # positions in the train split: the key of cached teacher outputs
    flips: torch.Tensor  # bool per image: horizontally flipped (the cache's "flip" view)


class BatchSampler:
    """`steps` full batches per epoch (the ragged last one is dropped: BatchNorm needs more than one
    sample, and fixed shapes keep kernels and graphs the same every step). All randomness, the order
    and the augmentation, comes from one CPU generator, so a seed gives the same batches on any device."""

    def __init__(self, data: Split, batch_size: int, augment: str, mean, std, channels_last: bool,
                 generator: torch.Generator):
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.mean, self.std, self.channels_last, self.generator = mean, std, channels_last, generator
        self.steps = max(1, len(data) // batch_size)

    @property
    def images_per_epoch(self) -> int:
        return self.steps * self.batch_size

    def epoch(self):
        """The batches of one epoch, in a new seeded order."""
        dev = self.data.images.device
        order = torch.randperm(len(self.data), generator=self.generator).to(dev)  # one copy per epoch
        bs = self.batch_size
        for step in range(self.steps):
            idx = order[step * bs:(step + 1) * bs]
            x_u8, flips = augment_batch(self.data.images[idx], self.augment, self.generator, return_flips=True)
            yield Batch(prepare_batch(x_u8, self.mean, self.std, self.channels_last), self.data.labels[idx],
                        idx, flips)
