"""Evaluation folds each BatchNorm into the conv before it (models/fold.py): the same logits as the model as it is,
the model itself untouched, the folded twin following the weights as they train, and only the stock residual
students folded (a pre-activation, timm or QAT model, or one in training mode, is evaluated as it is)."""
import torch
from torch import nn

from data.dataset import Split
from models.cnn_model import ResidualCNN
from models.fold import foldable, folded_for_eval
from runtime.inference import predict


def trained_like(blocks: int) -> ResidualCNN:
    """A student with running statistics and affine parameters away from their initial values."""
    torch.manual_seed(blocks)
    model = ResidualCNN(blocks, 1, 10)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def test_folded_logits_match_the_model_and_leave_it_untouched():
    images = torch.randint(0, 256, (70, 1, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.zeros(70, dtype=torch.long))
    for blocks in (2, 4):
        model = trained_like(blocks)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        twin = folded_for_eval(model)
        assert twin is not model and not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
        folded = predict(model, split, (0.3,), (0.4,), 32, channels_last=True)
        with torch.no_grad():
            plain = model(((images.float() / 255 - 0.3) / 0.4))
        assert torch.allclose(folded, plain, atol=1e-4), (folded - plain).abs().max()
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_twin_follows_the_weights_as_they_train():
    model = trained_like(2)
    x = torch.randn(4, 1, 28, 28)
    first = folded_for_eval(model)
    with torch.no_grad():
        model.features[0].conv2.weight.mul_(1.5)
        model.features[1].bn1.running_mean.add_(0.25)
        model.head[-1].bias.add_(1.0)
        again = folded_for_eval(model)
        assert again is first  # built once, refolded
        assert torch.allclose(again(x), model(x), atol=1e-4)


def test_only_stock_residual_students_in_eval_mode_are_folded():
    model = trained_like(2)
    assert foldable(model) and not foldable(model.train())
    assert folded_for_eval(model) is model  # in training mode: as it is
    model.eval().features[0].conv1 = type("FakeQuantConv", (nn.Conv2d,), {})(16, 16, 3, 1, 1, bias=False)
    assert not foldable(model)  # a subclass (e.g. a QAT student's fake-quantized conv)
    pre = ResidualCNN(2, 1, 10).eval()
    pre.features[0].preact = True
    assert not foldable(pre) and not foldable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval())
