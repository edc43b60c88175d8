"""A ResidualCNN with a classifier at the end of every stage (every 2nd block: where the channels double),
the student of BYOT (Zhang et al., ICCV 2019, "Be Your Own Teacher"). Its forward is the ordinary one, the
deepest exit, so training, evaluation, deployment and the plots see a plain student; `exits(x)` gives every
exit's logits and features (for distill/byot.py), `exit_logits(x, k)` runs the network only as far as exit k,
and `early_exit(x, threshold)` answers at the first exit confident enough (evaluate.py --exit).

An exit k: the stage's feature map, average-pooled, through Linear + BatchNorm + ReLU to the width of the
deepest features (its feature, which BYOT's L2 term pulls toward the deepest one), then Linear to the classes.
Exit 1 is the shallowest; the last exit is the network's own head."""
import torch
from torch import nn

from models.cnn_model import ResidualCNN, stage_channels


def exit_blocks(blocks: int) -> list:
    """The 1-based blocks after which an exit sits: every 2nd block before the last, then the last."""
    return [b for b in range(2, blocks, 2)] + [blocks]


class MultiExitCNN(ResidualCNN):
    def __init__(self, blocks: int, in_channels: int = 3, num_classes: int = 6, width: int = 16, fc_layers=None,
                 dropout: float = 0.5):
        super().__init__(blocks, in_channels, num_classes, width, fc_layers, dropout)
        chans, last = stage_channels(blocks, width), stage_channels(blocks, width)[-1]
        self.exit_after = exit_blocks(blocks)
        self.side = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[b - 1], last),
                                                nn.BatchNorm1d(last), nn.ReLU(inplace=True))
                                  for b in self.exit_after[:-1])
        self.side_heads = nn.ModuleList(nn.Linear(last, num_classes) for _ in self.exit_after[:-1])

    @property
    def num_exits(self) -> int:
        return len(self.exit_after)

    def _walk(self, x: torch.Tensor):
        """(features, logits) of exit 1, 2, ..., the deepest last, each computed only when the walk reaches it:
        the blocks after an exit run only if its caller asks for the next one. The deepest's features are its
        pooled maps."""
        x, done = self.stem(x), 0
        for k, b in enumerate(self.exit_after[:-1]):
            x, done = self.features[done:b](x), b
            f = self.side[k](x)
            yield f, self.side_heads[k](f)
        f = torch.flatten(self.pool(self.features[done:](x)), 1)
        yield f, self.head(f)

    def exits(self, x: torch.Tensor) -> tuple:
        """([logits of exit 1..K], [features of exit 1..K])."""
        feats, logits = zip(*self._walk(x))
        return list(logits), list(feats)

    def exit_logits(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Exit k's logits (1-based), computing only the blocks before it."""
        if k == self.num_exits:
            return self(x)
        x = self.features[:self.exit_after[k - 1]](self.stem(x))
        return self.side_heads[k - 1](self.side[k - 1](x))

    def early_exit(self, x: torch.Tensor, threshold: float) -> tuple:
        """(logits, exit) of one image (batch 1): the first exit whose top softmax probability reaches
        `threshold`, else the deepest; the blocks after it never run."""
        for k, (_, logits) in enumerate(self._walk(x), start=1):
            if k == self.num_exits or logits.softmax(1).max() >= threshold:
                return logits, k

    def exit_params(self, k: int) -> int:
        """Parameters exit k uses: the stem, the blocks before it and its own head."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        used = count(self.stem) + count(self.features[:self.exit_after[k - 1]])
        own = (self.head,) if k == self.num_exits else (self.side[k - 1], self.side_heads[k - 1])
        return used + sum(count(m) for m in own)
