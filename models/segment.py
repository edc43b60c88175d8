"""The semantic-segmentation students: a U-Net-like family over the residual CNN's own stages.

Encoder: ResidualCNN's stem and `blocks` ResidualBlocks by the same rule (models/cnn_model.py), so the
parameter names `stem.*` and `features.<i>.*` match a classification student's and its encoder weights
load as they are. Skips: the last block's output at each shallower resolution (block 1 at full resolution,
then every odd block followed by a stride-2 one). Light decoder: from the deepest map up, per level,
bilinear upsampling to the skip's exact size, concatenation with the skip, one 3x3 conv + BN + ReLU to the
skip's channels; a 1x1 conv to the classes at full resolution. Output [N, num_classes, H, W].

Trainable parameters at 1 input channel and 11 classes (models.cnn_model.count_params):

    blocks  width     params
         4     16    130,507
         6     16    545,355
         8     16  2,202,443
         8     24  4,951,979
         8     32  8,800,395
"""
import torch
from torch import nn
from torch.nn import functional as F

from models.blocks import ResidualBlock
from models.cnn_model import stage_channels


class SegmentationCNN(nn.Module):
    def __init__(self, blocks: int, in_channels: int = 1, num_classes: int = 11, width: int = 16):
        super().__init__()
        if blocks < 1:
            # block 1 is the full-resolution skip; without it the 1x1 head would sit on the bare stem
            raise ValueError(f"SegmentationCNN needs blocks >= 1, got {blocks}")
        chans = stage_channels(blocks, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, c_in = [], width
        for i, c_out in enumerate(chans, start=1):
            layers.append(ResidualBlock(c_in, c_out, stride=2 if i % 2 == 0 else 1))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        # a block is a skip when the next one halves the resolution: blocks 1, 3, 5, ... short of the last
        self.skip_ids = list(range(0, blocks - 1, 2))  # 0-based indices into features
        decoder = []
        for i in reversed(self.skip_ids):
            decoder.append(nn.Sequential(nn.Conv2d(c_in + chans[i], chans[i], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(chans[i]), nn.ReLU(inplace=True)))
            c_in = chans[i]
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(c_in, num_classes, 1)
        self.blocks, self.width, self.fc_layers = blocks, width, ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.stem(x), []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.skip_ids:
                skips.append(x)
        for dec, skip in zip(self.decoder, reversed(skips)):
            # size=, not scale_factor=2: stride-2 convs round odd sides up (21 -> 11), so 2x would miss by one
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)


def build_segmenter(blocks: int, width: int, in_channels: int, num_classes: int) -> SegmentationCNN:
    return SegmentationCNN(blocks, in_channels, num_classes, width)
