"""The parametric residual-CNN family: every student depth (and the seed12 teacher) from one class.

Rule (the original coursework repo's, made parametric): a 3x3 stem conv to `width` channels + BN +
ReLU at full resolution; `blocks` residual blocks where every 2nd block doubles the channels with
stride 2; global average pooling; a head of hidden FC layers (Linear -> BatchNorm1d -> ReLU ->
Dropout(0.5)) and a final Linear to the classes. At 3x150x150 and 6 classes: res4 [32] 98,294
parameters, res6 [64] 408,854, res8 [128] 1,648,470, res10 [256] 6,601,686, seed12 26,534,358.
"""
from typing import Optional, Sequence

import torch
from torch import nn

from models.blocks import ResidualBlock


def stage_channels(blocks: int, width: int) -> list:
    """Output channels of each block: block i (1-based) doubles when i is even."""
    chans, c = [], width
    for i in range(1, blocks + 1):
        if i % 2 == 0:
            c *= 2
        chans.append(c)
    return chans


MIN_IMAGE_SIZE = 8  # px, any model: below it the 3x3 stem and the 4 px crop padding see mostly padding


def min_image_size(blocks: int) -> int:
    """The smallest input side a student of `blocks` blocks takes: each of its blocks // 2 stride-2 blocks
    must halve a map of at least 2 px (res4 and res6 need 8 px, res8 9, res10 17, res12 33). 0 blocks:
    MIN_IMAGE_SIZE (the rule for teachers, which keep their own architectures' rules)."""
    return max(MIN_IMAGE_SIZE, 2 ** max(0, blocks // 2 - 1) + 1)


def default_fc_layers(blocks: int, width: int) -> tuple:
    return (stage_channels(blocks, width)[-1] // 2,)


class ResidualCNN(nn.Module):
    def __init__(self, blocks: int, in_channels: int = 3, num_classes: int = 6, width: int = 16,
                 fc_layers: Optional[Sequence[int]] = None, dropout: float = 0.5):
        super().__init__()
        fc_layers = default_fc_layers(blocks, width) if fc_layers is None else tuple(fc_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, c_in = [], width
        for i, c_out in enumerate(stage_channels(blocks, width), start=1):
            layers.append(ResidualBlock(c_in, c_out, stride=2 if i % 2 == 0 else 1))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head = []
        for h in fc_layers:
            head += [nn.Linear(c_in, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            c_in = h
        head.append(nn.Linear(c_in, num_classes))
        self.head = nn.Sequential(*head)
        self.blocks, self.fc_layers = blocks, fc_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(self.stem(x)))
        return self.head(torch.flatten(x, 1))


def count_params(model: nn.Module) -> int:
    """Trainable parameters (the original repo's 'Trainable Parameters')."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_student(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The ResidualCNN of `blocks`, or the timm model `student_arch` names (from `student_weights` if set)."""
    if cfg.student_arch:
        from models import timm_models
        return timm_models.create(cfg.student_arch, in_channels, num_classes, cfg.student_weights, "--student_arch",
                                  timm_models.image_size(cfg))
    return ResidualCNN(cfg.blocks, in_channels, num_classes, cfg.width, cfg.fc_layers)


# Named factories over the one parametric class (the original repo's four students).
def res4(**kw): return ResidualCNN(4, **kw)
def res6(**kw): return ResidualCNN(6, **kw)
def res8(**kw): return ResidualCNN(8, **kw)
def res10(**kw): return ResidualCNN(10, **kw)
