"""--precision=auto: bf16 where the hardware has native bf16 units (detected from the CPU's flags), fp32
elsewhere, and every run says which and why."""
import pytest
import torch

import run_experiments
import train
from config import make_config
from utils import device as device_mod
from utils.device import resolve_auto_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags,expected", [
    (["avx2"], ("fp32", "auto: no native bf16 units (avx2)")),
    (["avx2", "avx512f", "avx512_bf16"], ("bf16", "auto: AVX512-BF16")),
    (["avx2", "avx512f", "avx512_bf16", "amx_bf16"], ("bf16", "auto: AMX")),
])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: flags)
    assert resolve_auto_precision("auto", CPU) == expected
    assert resolve_auto_precision("fp8", CPU) == ("fp8", "")  # an explicit precision is kept


@pytest.mark.parametrize("flags,name", [(["amx_bf16"], "bf16"), (["avx2"], "fp32")])
def test_the_sweep_names_what_auto_chose(monkeypatch, flags, name):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: flags)
    runs = run_experiments.grid(make_config(["--preset=smoke", "--device=cpu", "--sweep_blocks=[2]",
                                             "--sweep_precisions=[fp32,auto]", "--sweep_methods=[kd]"]))
    kd = [c for c in runs if c.method == "kd"]
    assert [c.precision for c in kd] == (["fp32", "bf16"] if name == "bf16" else ["fp32"])  # no duplicate
    if name == "bf16":
        assert kd[1].precision_note == "auto: AMX" and "_bf16_kd_" in run_experiments.default_run_name(kd[1])


def test_a_run_records_autos_choice(monkeypatch, tmp_path):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: ["avx512_bf16"])
    s = train.main(make_config(["--preset=smoke", "--device=cpu", "--blocks=2", "--method=ce", "--precision=auto",
                                "--max_train_samples=128", f"--out_dir={tmp_path}"]))
    assert s["precision"] == "bf16" and "_bf16_" in s["run_name"]
    assert "autocast bfloat16" in s["precision_description"] and "auto: AVX512-BF16" in s["precision_description"]
