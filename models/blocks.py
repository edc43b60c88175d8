"""The one residual block every model here is built from."""
import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Basic ResNet block (He et al. 2016): two 3x3 convs plus a shortcut.

    Post-activation (the default; the student family, seed12 and the CIFAR ResNets):
    conv-BN-ReLU-conv-BN, add the shortcut, ReLU. Pre-activation (`preact=True`, wide ResNets,
    Zagoruyko & Komodakis 2016): BN-ReLU-conv-BN-ReLU-(dropout)-conv, add the shortcut, no ReLU after.
    The shortcut is the identity, or a 1x1 conv (+ BN when post-activation) where the block changes
    channels or stride. Convs carry no bias (BN follows or precedes each one).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, preact: bool = False, dropout: float = 0.0):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch if preact else out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # ReLU as modules, not torch.relu calls: the PT2E quantizers find conv-BN-ReLU and add-ReLU by the module
        # type each graph node came from, and only then quantize after the ReLU alone (QAT's int8 program ran
        # at PTQ's speed only from then on: docs/speed.md). No parameters, so no state-dict change.
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            proj = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
            self.shortcut = proj if preact else nn.Sequential(proj, nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            a = self.relu1(self.bn1(x))
            out = self.conv2(self.drop(self.relu2(self.bn2(self.conv1(a)))))
            # a projection shortcut sees the activated input, as in the WRN reference code
            return out + (x if isinstance(self.shortcut, nn.Identity) else self.shortcut(a))
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))
