"""quant/: the packing codecs, a packed file's round trip to the fake-quantized weights, bit widths counted
from the file, the int8 QAT graph's train/eval/convert cycle, and damaged files: packing metadata that is one
line naming the file, ptq.json rows left out with one warning."""
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from models.cnn_model import ResidualCNN
from quant.lowbit import to_lowbit
from quant.packing import pack, quant_layers, read_packed, unpack, unpack_state, weight_bits, write_packed
from utils.errors import UserError


@pytest.mark.parametrize("codec,low,high", [("int8", -127, 127), ("int4", -7, 7), ("trit", -1, 1), ("sign", -1, 1)])
@pytest.mark.parametrize("n", [1, 7, 40, 1001])
def test_pack_unpack_is_exact_for_every_length(codec, low, high, n):
    g = torch.Generator().manual_seed(n)
    ints = torch.randint(low, high + 1, (n,), generator=g)
    if codec == "sign":
        ints = torch.where(ints >= 0, 1, -1)
    packed = pack(ints, codec)
    assert packed.dtype == torch.uint8
    per_byte = {"int8": 1, "int4": 2, "trit": 5, "sign": 8}[codec]
    assert packed.numel() == math.ceil(n / per_byte)
    assert torch.equal(unpack(packed, codec, (n,)), ints.float())


def _lowbit_student(mode, seed=0):
    torch.manual_seed(seed)
    model = to_lowbit(ResidualCNN(4, 1, 10), mode)
    x = torch.randn(16, 1, 28, 28)
    model.train()
    model(x).sum().backward()  # the straight-through estimator reaches the fp32 weights
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for _, m in quant_layers(model))
    return model.eval(), x


@pytest.mark.parametrize("mode,codec,levels", [("int4", "int4", 15), ("ternary", "trit", 3), ("binary", "sign", 2)])
def test_packed_file_round_trips_to_the_fake_quantized_weights(tmp_path, mode, codec, levels):
    model, x = _lowbit_student(mode)
    path = tmp_path / "model.quant.safetensors"
    write_packed(model, path)
    state = unpack_state(path)
    layers = quant_layers(model)
    assert layers[0][1].codec == "int8" and layers[-1][1].codec == "int8"  # the edges stay at 8 bits
    for name, layer in layers:
        fake = layer.quant_weight().value.detach()
        assert torch.equal(state[f"{name}.weight"], fake), name
        if layer.codec == codec:
            assert len(torch.unique(fake[0])) <= levels
    plain = ResidualCNN(4, 1, 10)
    plain.load_state_dict(state)  # every key of the unquantized model, nothing else
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), model(x))


def test_bits_per_weight_are_counted_from_the_file(tmp_path):
    bits = {}
    for mode in ("int4", "ternary", "binary"):
        model, _ = _lowbit_student(mode)
        path = tmp_path / f"{mode}.safetensors"
        write_packed(model, path)
        bits[mode] = weight_bits(path)
    # res4: 97,232 conv/linear weights; the 8-bit edges (144 + 320) lift the average slightly above the mode's
    assert bits["int4"]["weights"] == 97232
    assert 4.0 < bits["int4"]["bits_per_weight"] < 4.1
    assert 1.6 < bits["ternary"]["bits_per_weight"] < 1.7
    assert 1.0 < bits["binary"]["bits_per_weight"] < 1.1
    fp32_bytes = 4 * sum(p.numel() for p in ResidualCNN(4, 1, 10).state_dict().values())
    assert bits["ternary"]["file_bytes"] < fp32_bytes / 10


def test_a_file_without_packing_is_refused_in_one_line(tmp_path):
    from utils.checkpoint import save_weights

    path = tmp_path / "plain.safetensors"
    save_weights(ResidualCNN(4, 1, 10), path)
    with pytest.raises(UserError, match="not a model.quant.safetensors"):
        read_packed(path)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read a packed model"):
        read_packed(tmp_path / "junk.safetensors")


@pytest.mark.slow  # torch.export and PT2E preparation, four times over: ~30 s on 2 cores
def test_int8_qat_graph_trains_freezes_scales_in_eval_and_converts(tmp_path):
    from quant.pt2e import Int8QAT, ptq_int8, save_int8_program
    from utils.checkpoint import load_weights_into, save_weights

    torch.manual_seed(0)
    example = torch.randn(2, 1, 28, 28)
    q = Int8QAT(ResidualCNN(4, 1, 10), example)
    opt = torch.optim.Adam(q.parameters(), 1e-3)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(q(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        a, b = q(x), q(x)
    assert torch.equal(a, b)  # observers are off in eval: evaluating does not move the scales
    again = Int8QAT(ResidualCNN(4, 1, 10), example)
    save_weights(q, tmp_path / "qat.safetensors")  # shared quantizers (an add's inputs) are stored once each
    load_weights_into(again, tmp_path / "qat.safetensors")  # a checkpoint restores the scales too
    with torch.no_grad():
        assert torch.equal(again.eval()(x), a)
    converted = q.convert()
    # each conv's ReLU and each residual add's ReLU are fused (quantized after the ReLU only), as post-training
    # int8's are: no extra quantize/dequantize pair keeps Inductor from its int8 conv(+add)+ReLU kernels
    qdq = lambda g: sorted(str(n.target) for n in g.graph.nodes if "quantize" in str(n.target))
    assert qdq(converted) == qdq(ptq_int8(ResidualCNN(4, 1, 10).eval(), example, [x]))
    _, loaded = save_int8_program(converted, example, tmp_path / "model.int8.pt2")
    with torch.no_grad():
        out = loaded(x)
    assert (out.argmax(1) == a.argmax(1)).float().mean() > 0.9
    assert (out - a).abs().max() < 0.1 * a.abs().max()


# ----------------------------------------------------------------------------- model.quant.safetensors

@pytest.mark.parametrize("packing,tensors", [
    ("{not json", {}), ('["conv.weight"]', {}), ('{"conv.weight": "int4"}', {}),
    ('{"conv.weight": {"codec": "int5", "shape": [2, 2]}}', {}),
    ('{"conv.weight": {"codec": "int4", "shape": "four"}}', {}),
    ('{"conv.weight": {"codec": "int4", "shape": [64, 64]}}', {}),  # more weights than the bytes hold
    ('{"conv.weight": {"codec": "int4"}}', {}),
    ('{"other.weight": {"codec": "int4", "shape": [2, 2]}}', {}),  # no such tensors in the file
    ('{"conv.weight": {"codec": "int4", "shape": [2, 2]}}', {"conv.weight.scale": torch.ones(3)})])
def test_damaged_packing_metadata_is_one_line_naming_the_file(tmp_path, packing, tensors):
    path = tmp_path / "model.quant.safetensors"
    save_file({"conv.weight.packed": torch.zeros(2, dtype=torch.uint8), "conv.weight.scale": torch.ones(2),
               "bn.bias": torch.zeros(2), **tensors}, str(path), metadata={"packing": packing})
    for read in (unpack_state, weight_bits):
        with pytest.raises(UserError) as e:
            read(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: damaged 'packing' metadata") and "\n" not in msg, msg


# ----------------------------------------------------------------------------- ptq.json

def test_wrong_typed_ptq_rows_are_left_out_with_one_warning_and_the_table_is_written(tmp_path, capsys):
    from quant.ptq_file import read_ptq
    from report.qat import qat_points, qat_table

    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    good = {"test_acc": 61.5, "bits_per_weight": 4.06, "packed_bytes": 900, "file_bytes": 1800}
    (fp32 / "ptq.json").write_text(json.dumps({
        "int4": good, "ternary": {**good, "test_acc": "high"}, "binary": {**good, "file_bytes": "big"},
        "int8": "not a row"}))
    student = {"status": "complete", "role": "student", "blocks": 2, "seed": 0, "precision": "fp32"}
    items = [({**student, "method": "kd", "best_test_acc": 70.0, "model_bytes": 9000}, str(fp32))] + [
        ({**student, "method": m, "qat": mode, "qat_test_acc": 65.0, "file_bytes": 1800, "bits_per_weight": 4.06},
         str(tmp_path / f"{m}_{mode}")) for m in ("ce", "kd") for mode in ("int4", "ternary", "binary")]
    capsys.readouterr()
    assert read_ptq(str(fp32)) == {"int4": good}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {fp32 / 'ptq.json'}: ") and "ternary" in err[0], err
    assert "binary" in err[0] and "int8" in err[0] and "left out" in err[0], err
    table = qat_table(*qat_points(items))  # raised TypeError on "big" / "high" before
    assert "| res2 | int4 | PTQ | 61.50 |" in table and "| res2 | ternary | PTQ |" not in table
    assert "| res2 | binary | QAT-KD |" in table
