import pytest
import torch

from models.cnn_model import ResidualCNN, count_params, min_image_size
from models import segment
from models.segment import SegmentationCNN, build_segmenter

SIZES = [(64, 84), (28, 28), (33, 47)]  # 84 -> 42, 21, 11, 6 and odd sides both ways: the skips' sizes must hold


@pytest.mark.parametrize("blocks", [1, 4, 6, 8])
def test_output_keeps_the_input_size(blocks):
    model = build_segmenter(blocks, width=4, in_channels=1, num_classes=11).eval()
    for h, w in SIZES + [(min_image_size(blocks),) * 2]:
        with torch.no_grad():
            assert model(torch.randn(1, 1, h, w)).shape == (1, 11, h, w)


@pytest.mark.parametrize("blocks", [1, 4, 8])
def test_backward_reaches_every_parameter(blocks):
    model = build_segmenter(blocks, width=4, in_channels=3, num_classes=5)
    out = model(torch.randn(2, 3, 33, 47))
    torch.nn.functional.cross_entropy(out, torch.randint(0, 5, (2, 33, 47))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("blocks", [1, 4, 6, 8])
def test_encoder_is_the_classification_students_stages(blocks):
    seg, cls = SegmentationCNN(blocks, 3, 11, width=8), ResidualCNN(blocks, 3, 6, width=8)
    encoder = lambda m: {k: v.shape for k, v in m.state_dict().items() if k.startswith(("stem.", "features."))}
    assert encoder(seg) == encoder(cls) and len(encoder(seg)) > 0
    # so a trained classifier's encoder loads as it is, leaving only the decoder and head to learn
    missing, unexpected = seg.load_state_dict(
        {k: v for k, v in cls.state_dict().items() if k in encoder(cls)}, strict=False)
    assert not unexpected and all(k.startswith(("decoder.", "head.")) for k in missing)


@pytest.mark.parametrize("blocks,width,expected", [(4, 16, 130_507), (6, 16, 545_355), (8, 16, 2_202_443),
                                                   (8, 24, 4_951_979), (8, 32, 8_800_395)])
def test_parameter_counts_match_the_docstring(blocks, width, expected):
    model = build_segmenter(blocks, width, in_channels=1, num_classes=11)
    assert count_params(model) == expected
    assert f"{expected:,}" in segment.__doc__  # the table a reader sees says the same
    assert model.blocks == blocks and model.width == width and model.fc_layers == ()


def test_zero_blocks_is_refused():
    with pytest.raises(ValueError, match="blocks >= 1"):
        SegmentationCNN(0)


def test_eval_output_is_deterministic():
    model = build_segmenter(6, width=4, in_channels=1, num_classes=11).eval()
    x = torch.randn(2, 1, 33, 47)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
