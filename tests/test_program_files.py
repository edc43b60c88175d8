"""Program files (.pt2) never run code: an int8 run is rebuilt from its safetensors state, and the one
read-back of a program this process wrote refuses anything torch.export.load would unpickle."""
import io
import json
import os
import zipfile

import pytest
import torch

from quant.pt2e import check_program_archive, load_program
from utils.errors import UserError


class _Payload:
    """What a hostile archive carries: unpickling it creates a directory (the marker)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _program(path):
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(program, str(path))
    return path


def _rewrite(src, dst, change):
    """A copy of the zip `src` with change(name, bytes) -> bytes (or None to keep) applied to each entry."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            data = z.read(info.filename)
            out.writestr(info, change(info.filename, data) or data)
    return dst


def _evil_bytes(marker) -> bytes:
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _pickled_weight(tmp_path, marker):
    """A real program whose first weight is flagged use_pickle and holds the payload."""
    evil = _evil_bytes(marker)
    state = {}

    def change(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            fqn = next(iter(config["config"]))
            config["config"][fqn]["use_pickle"] = True
            state["file"] = config["config"][fqn]["path_name"]
            return json.dumps(config).encode()
        return None

    staged = _rewrite(_program(tmp_path / "clean.pt2"), tmp_path / "staged.pt2", change)
    return _rewrite(staged, tmp_path / "evil.pt2",
                    lambda name, data: evil if name.endswith("/weights/" + state["file"]) else None)


def test_a_pickled_weight_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = _pickled_weight(tmp_path, marker)
    with pytest.raises(UserError, match=r"evil.pt2: refused, .* pickle"):
        load_program(evil)
    assert not marker.exists()
    try:  # the threat is real: torch.export.load itself runs the payload
        torch.export.load(str(evil))
    except Exception:  # noqa: BLE001 - it may fail after the payload ran; the marker says whether it ran
        pass
    assert marker.exists()


def test_a_sample_input_that_needs_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = _evil_bytes(marker)
    bad = _rewrite(_program(tmp_path / "clean.pt2"), tmp_path / "evil.pt2",
                   lambda name, data: evil if "/sample_inputs/" in name else None)
    with pytest.raises(UserError, match="sample input .* not weights-only loadable"):
        load_program(bad)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [(b"", "not a torch.export program archive"),
                                            (b"hello", "not a torch.export program archive"),
                                            (None, "not a torch.export program archive")])
def test_a_torn_or_foreign_program_file_is_one_line(tmp_path, content, match):
    path = tmp_path / "model.int8.pt2"
    if content is None:  # torn: the first half of a real archive
        whole = _program(tmp_path / "whole.pt2").read_bytes()
        content = whole[:len(whole) // 2]
    path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_program(path)


def test_a_clean_program_passes_the_check(tmp_path):
    path = _program(tmp_path / "clean.pt2")
    check_program_archive(path)
    assert load_program(path).module()(torch.ones(1, 2)).shape == (1, 2)


@pytest.mark.slow  # PT2E export and conversion, twice: ~30 s on 2 cores
def test_an_int8_run_is_rebuilt_from_its_state_and_never_reads_the_program(tmp_path):
    from config import make_config
    from models.cnn_model import build_student
    from quant.pt2e import Int8QAT
    from quant.students import example_input, int8_state_path, load_deployed, write_int8

    cfg = make_config(blocks=2, qat="int8", fc_layers=())
    torch.manual_seed(0)
    q = Int8QAT(build_student(cfg, 1, 10).eval(), example_input(cfg, 1))
    q(torch.randn(8, 1, 28, 28))  # the observers see data: scales that are not the defaults
    path = tmp_path / "model.int8.pt2"
    write_int8(q, q.convert(), cfg, path, 1)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = q.convert()(x)
    marker = tmp_path / "ran"
    os.replace(_pickled_weight(tmp_path, marker), path)  # a crafted program in place of the real one
    model, _ = load_deployed(cfg, str(path), 1, 10)
    model.eval()  # (an exported module's eval() returns nothing)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert not marker.exists()
    os.remove(int8_state_path(path))
    with pytest.raises(UserError, match="no model.int8.safetensors beside it"):
        load_deployed(cfg, str(path), 1, 10)
